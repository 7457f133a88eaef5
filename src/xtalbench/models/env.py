"""Model environments: a model's own pinned Python stack, built once, and a worker inside it.

A model YAML may declare

    environment:
      name: sevennet            # folder prefix under .venvs/
      torch: "2.13.0"           # installed first (pip picks the local CPU wheel; uv would not)
      packages: [sevenn==0.13.0]  # exact pins only

`build_environment` makes `.venvs/<name>-<hash of the pins>` with `python -m venv` + pip (torch
first, then the worker's own needs and the model's pins in one resolver run), records `pip freeze`
in it, and writes a `.complete` marker last, so a half-built folder is never taken for a built one
(it is rebuilt from scratch).
The hash covers the pins, torch, the worker's pins and the Python version: changing any pin
builds a new folder and never touches the old one.

`EnvPredictor` (in `xtalbench.models.worker`) runs the model inside that environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xtalbench.core.errors import XtalbenchError

ENVS_DIR = Path(".venvs")
# What the worker itself imports inside a model environment (xtalbench's core and models code
# travels on PYTHONPATH, not as an installed package). Same versions as the main environment.
WORKER_PACKAGES = ("pyarrow==26.0.1", "PyYAML==6.0.3", "ase==3.29.0", "tqdm==4.70.1")
COMPLETE = ".complete"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[A-Za-z0-9,._-]+\])?==([A-Za-z0-9.+!_-]+)$")


class EnvironmentError_(XtalbenchError, RuntimeError):
    """Base of environment errors (spec, build, worker)."""


class EnvironmentSpecError(EnvironmentError_, ValueError):
    """A malformed `environment:` block; names the field and the value."""


class EnvironmentBuildError(EnvironmentError_):
    """A model environment that could not be built; names the package pip could not install."""

    def __init__(self, env: str, package: str | None, detail: str, log: Path | None = None):
        self.env, self.package, self.detail, self.log = env, package, detail, log
        what = f"package {package!r}" if package else "its packages"
        where = f" (pip log: {log})" if log else ""
        super().__init__(f"model environment {env!r}: cannot install {what}: {detail}{where}")


@dataclass(frozen=True)
class Environment:
    """A pinned model environment (see the module docstring)."""

    name: str
    packages: tuple[str, ...] = ()
    torch: str | None = "2.13.0"
    pip_args: tuple[str, ...] = field(default_factory=tuple)  # extra `pip install` arguments

    def pins(self, worker: bool = True) -> list[str]:
        """Everything installed after torch, in install order."""
        return [*(WORKER_PACKAGES if worker else ()), *self.packages]

    def key(self, worker: bool = True) -> str:
        """12 hex digits of a hash of every pin, torch and the Python version."""
        payload = {
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "torch": self.torch,
            "packages": sorted(self.pins(worker), key=str.lower),
            "pip_args": list(self.pip_args),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    def path(self, root: str | Path | None = None, worker: bool = True) -> Path:
        return Path(root or envs_dir()) / f"{self.name}-{self.key(worker)}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "torch": self.torch, "packages": list(self.packages), "pip_args": list(self.pip_args)}


def envs_dir() -> Path:
    """`$XTALBENCH_ENVS` or `.venvs` (relative to the working directory: the repository root)."""
    return Path(os.environ.get("XTALBENCH_ENVS") or ENVS_DIR)


def parse_environment(data: Any, source: str = "<dict>") -> Environment:
    """Validate an `environment:` mapping; every package must be an exact `name==version` pin."""
    if not isinstance(data, dict):
        raise EnvironmentSpecError(f"{source}: field 'environment': expected a mapping with name, torch, packages")
    unknown = sorted(set(data) - {"name", "torch", "packages", "pip_args"})
    if unknown:
        raise EnvironmentSpecError(f"{source}: field 'environment.{unknown[0]}': unknown (allowed: name, packages, pip_args, torch)")
    name = data.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise EnvironmentSpecError(f"{source}: field 'environment.name': {name!r} must match [A-Za-z0-9][A-Za-z0-9._-]*")
    packages = data.get("packages") or []
    if not isinstance(packages, list):
        raise EnvironmentSpecError(f"{source}: field 'environment.packages': expected a list of name==version pins")
    for pin in packages:
        if not isinstance(pin, str) or not _PIN.match(pin.strip()):
            raise EnvironmentSpecError(
                f"{source}: field 'environment.packages': {pin!r} is not an exact pin (write name==version)"
            )
        if pin.split("==")[0].strip().lower() == "torch":
            raise EnvironmentSpecError(f"{source}: field 'environment.packages': pin torch with `environment.torch`, not in packages")
    torch = data.get("torch", "2.13.0")
    if torch is not None and not re.fullmatch(r"[0-9][0-9A-Za-z.+]*", str(torch)):
        raise EnvironmentSpecError(f"{source}: field 'environment.torch': {torch!r} is not a version")
    pip_args = data.get("pip_args") or []
    if not isinstance(pip_args, list) or not all(isinstance(a, str) for a in pip_args):
        raise EnvironmentSpecError(f"{source}: field 'environment.pip_args': expected a list of strings")
    return Environment(name=name, packages=tuple(p.strip() for p in packages), torch=None if torch is None else str(torch), pip_args=tuple(pip_args))


def python_of(path: Path) -> Path:
    return path / "bin" / "python"


def is_built(env: Environment, root: str | Path | None = None, worker: bool = True) -> bool:
    return (env.path(root, worker) / COMPLETE).exists()


def _failed_package(log: str, pins: list[str]) -> str | None:
    """The requirement pip names in its failure, else the first pin the log mentions."""
    for pattern in (
        r"No matching distribution found for ([^\s;]+)",
        r"Could not find a version that satisfies the requirement ([^\s;(]+)",
        r"Cannot install ([^\s]+) because",
        r"Failed to build ([^\s]+)",
        r"Failed building wheel for ([^\s]+)",
    ):
        match = re.search(pattern, log)
        if match:
            return match.group(1).strip(" ,")
    conflict = re.search(r"The conflict is caused by:\s*\n\s*(?:The user requested )?([^\s]+)", log)
    if conflict:
        return conflict.group(1)
    lowered = log.lower()
    for pin in pins:
        if pin.split("==")[0].lower() in lowered:
            return pin
    return None


def _pip(python: Path, args: list[str], env_name: str, log: Path, pins: list[str]) -> None:
    cmd = [str(python), "-m", "pip", "install", "--no-input", "--disable-pip-version-check", *args]
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(cmd)}\n")
        handle.flush()
        proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        text = log.read_text(errors="replace")
        tail = " | ".join(line.strip() for line in text.strip().splitlines()[-4:])
        raise EnvironmentBuildError(env_name, _failed_package(text, pins), f"pip exited {proc.returncode}: {tail}", log)


def build_environment(env: Environment, root: str | Path | None = None, worker: bool = True, force: bool = False, quiet: bool = False) -> Path:
    """Build (once) and return the environment's folder.

    Built in place (venv scripts hard-code their folder) with `.complete` written last, so an
    interrupted build is never taken for a built one and is rebuilt from scratch next time. A
    failed build removes the folder and keeps pip's log at `<folder>.failed.log`.
    """
    path = env.path(root, worker)
    if (path / COMPLETE).exists() and not force:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(path, ignore_errors=True)
    failed_log = path.with_name(path.name + ".failed.log")
    failed_log.unlink(missing_ok=True)
    if not quiet:
        print(f"building model environment {env.name!r} in {path} (torch {env.torch}, {len(env.pins(worker))} pins) ...", flush=True)
    proc = subprocess.run([sys.executable, "-m", "venv", str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(path, ignore_errors=True)
        raise EnvironmentBuildError(env.name, None, f"python -m venv failed: {proc.stderr.strip()[-400:]}")
    log = path / "pip.log"
    python = python_of(path)
    pins = env.pins(worker)
    try:
        if env.torch:
            _pip(python, ["--quiet", f"torch=={env.torch}"], env.name, log, [f"torch=={env.torch}"])
        if pins:
            # torch again in the same resolver run, so no pin can move it off the local CPU wheel
            torch_pin = [f"torch=={env.torch}"] if env.torch else []
            _pip(python, ["--quiet", *env.pip_args, *torch_pin, *pins], env.name, log, pins)
    except EnvironmentBuildError as error:
        shutil.copyfile(log, failed_log)
        shutil.rmtree(path, ignore_errors=True)
        error.log = failed_log
        raise EnvironmentBuildError(env.name, error.package, error.detail, failed_log) from None
    freeze = subprocess.run([str(python), "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=False)
    (path / "freeze.txt").write_text(freeze.stdout)
    (path / "environment.json").write_text(json.dumps({**env.as_dict(), "worker": worker, "key": env.key(worker)}, indent=1, sort_keys=True) + "\n")
    (path / COMPLETE).write_text(env.key(worker) + "\n")
    if not quiet:
        print(f"built {path}", flush=True)
    return path


def require_environment(env: Environment, model: str, root: str | Path | None = None, build: bool | None = None) -> Path:
    """The built environment's folder; builds it when `build` (default: `$XTALBENCH_BUILD_ENVS` != 0)."""
    path = env.path(root)
    if (path / COMPLETE).exists():
        return path
    if build is None:
        build = os.environ.get("XTALBENCH_BUILD_ENVS", "1") != "0"
    if not build:
        raise EnvironmentBuildError(env.name, None, f"model {model!r} needs environment {path}, which is not built (run `make envs`)")
    return build_environment(env, root)
