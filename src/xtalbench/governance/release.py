"""Dataset releases: a version pin committed to git and tagged, so a version can be restored.

`release(version)` refuses a dirty working tree, an existing tag or pin, and a workspace that
does not match `dvc.lock` (the pin would then name data nobody can pull). It writes
`releases/<version>.json` — the DATA_VERSION of every dataset, the md5 of every DVC output
(from `dvc.lock` and `*.dvc` files) and the git commit — commits that one file and creates the
annotated tag `data-<version>`. With the data pushed (`dvc push`, or `push=True`),
`dvc pull` on a checkout of the tag, or `dvc get --rev data-<version> <repo> <path>`, restores
byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from xtalbench.core.errors import XtalbenchError
from xtalbench.core.project import load_params, write_json
from xtalbench.governance.diff import dvc

VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]*$")
TAG_PREFIX = "data-"


class ReleaseError(XtalbenchError, RuntimeError):
    pass


def git(*args: str, cwd: str | Path = ".", check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise ReleaseError(f"`git {' '.join(args)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def tag_name(version: str, prefix: str = TAG_PREFIX) -> str:
    return f"{prefix}{version}"


def check_releasable(version: str, root: Path, prefix: str = TAG_PREFIX) -> None:
    """Every reason to refuse, checked before anything is written."""
    if not VERSION_RE.match(version) or ".." in version or version.endswith((".", ".lock")):
        raise ReleaseError(f"version {version!r} is not a valid release name (letters, digits, '.', '_', '+', '-')")
    if subprocess.run(["git", "rev-parse", "--git-dir"], cwd=root, capture_output=True).returncode != 0:
        raise ReleaseError(f"{root.resolve()} is not a git repository: a release is a git tag")
    tag = tag_name(version, prefix)
    existing = git("rev-parse", "--verify", "--quiet", f"refs/tags/{tag}", cwd=root, check=False)
    if existing:
        raise ReleaseError(f"tag {tag} already exists (at {existing[:12]}): releases are immutable, pick a new version")
    pin = root / "releases" / f"{version}.json"
    if pin.exists():
        raise ReleaseError(f"{pin} already exists: releases are immutable, pick a new version")
    dirty = git("status", "--porcelain", cwd=root)
    if dirty:
        listing = "\n  ".join(dirty.splitlines()[:20])
        raise ReleaseError(f"working tree is dirty; commit or remove these first:\n  {listing}")
    status = dvc("status", "--json", cwd=root, check=False)
    if status.returncode != 0:
        raise ReleaseError(f"`dvc status` failed: {status.stderr.strip()[-1000:]}")
    changed = json.loads(status.stdout or "{}")
    if changed:
        raise ReleaseError("the workspace does not match dvc.lock (run `dvc repro`/`dvc pull` and commit dvc.lock): "
                           + ", ".join(sorted(changed))[:1000])


def dvc_outs(root: Path) -> dict[str, dict[str, Any]]:
    """{path: {md5, size, nfiles, stage}} of every output in dvc.lock and in tracked *.dvc files."""
    outs: dict[str, dict[str, Any]] = {}
    lock = root / "dvc.lock"
    if lock.exists():
        data = yaml.safe_load(lock.read_text()) or {}
        for stage, block in sorted((data.get("stages") or {}).items()):
            for out in block.get("outs") or []:
                outs[out["path"]] = _out_entry(out, stage)
    for dvcfile in git("ls-files", "*.dvc", cwd=root).splitlines():
        data = yaml.safe_load((root / dvcfile).read_text()) or {}
        base = Path(dvcfile).parent
        for out in data.get("outs") or []:
            outs[(base / out["path"]).as_posix()] = _out_entry(out, dvcfile)
    return dict(sorted(outs.items()))


def _out_entry(out: dict[str, Any], stage: str) -> dict[str, Any]:
    return {"md5": out.get("md5"), "size": out.get("size"), "nfiles": out.get("nfiles"), "stage": stage}


def data_versions(root: Path, params: dict[str, Any]) -> dict[str, Any]:
    versions = {}
    for name in sorted(params.get("datasets") or {}):
        path = root / "datasets" / name / "DATA_VERSION.json"
        if not path.exists():
            raise ReleaseError(f"{path} is missing: run `dvc repro` (or `dvc pull`) so every dataset has a version pin")
        try:
            versions[name] = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ReleaseError(f"{path}: malformed JSON: {err}") from err
    return versions


def build_pin(version: str, root: Path, params: dict[str, Any], prefix: str = TAG_PREFIX) -> dict[str, Any]:
    return {
        "version": version,
        "tag": tag_name(version, prefix),
        "git_commit": git("rev-parse", "HEAD", cwd=root),
        "created_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "datasets": data_versions(root, params),
        "dvc_outs": dvc_outs(root),
        "dvc_remote": default_remote(root),
        "tools": {name: _version(name) for name in ("xtalbench", "dvc")},
    }


def default_remote(root: Path) -> str | None:
    """The name (never the URL or credentials) of the default DVC remote, from .dvc/config[.local]."""
    import configparser

    remote = None
    for name in ("config", "config.local"):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        try:
            parser.read(root / ".dvc" / name)
        except configparser.Error:
            continue
        remote = parser.get("core", "remote", fallback=remote)
    return remote


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def release(version: str, root: str | Path = ".", params_file: str | Path = "params.yaml", push: bool = False,
            prefix: str = TAG_PREFIX) -> dict[str, Any]:
    """Write, commit and tag the pin of `version`; returns the pin."""
    root = Path(root)
    check_releasable(version, root, prefix)
    params = load_params(root / params_file if not Path(params_file).is_absolute() else params_file)
    pin = build_pin(version, root, params, prefix)
    if push:
        proc = dvc("push", cwd=root, check=False)
        if proc.returncode != 0:
            raise ReleaseError(f"`dvc push` failed, nothing released: {proc.stderr.strip()[-1000:]}")
    path = write_json(pin, root / "releases" / f"{version}.json")
    rel = path.relative_to(root).as_posix()
    git("add", "--", rel, cwd=root)
    try:
        git("commit", "-m", f"Release data {version}", "--", rel, cwd=root)
    except ReleaseError:
        git("reset", "-q", "--", rel, cwd=root, check=False)
        path.unlink()
        raise
    git("tag", "-a", pin["tag"], "-m", f"xtalbench data release {version} (pin: {rel})", cwd=root)
    return pin
