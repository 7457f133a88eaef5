"""Dataset releases end to end in a temporary git + DVC repository with a local-directory remote:
release → fresh clone → `dvc pull` and `dvc get --rev <tag>` restore byte-identical files."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from xtalbench.governance.release import ReleaseError, dvc_outs, release

MAKE_DATA = '''
import json, sys
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
rows = int(sys.argv[1])
out = Path("datasets/tiny"); out.mkdir(parents=True, exist_ok=True)
table = pa.table({"frame_id": [f"f{i}" for i in range(rows)], "energy": [float(i) * -1.5 for i in range(rows)]})
pq.write_table(table, out / "frames.parquet", compression="zstd")
(out / "DATA_VERSION.json").write_text(json.dumps({"dataset": "tiny", "source": "local", "counts": {"read": rows}}))
Path("metrics/tiny").mkdir(parents=True, exist_ok=True)
Path("metrics/tiny/fetch.json").write_text(json.dumps({"read": rows, "kept": rows, "quarantined": 0}))
'''


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sh(*cmd: str, cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed: {proc.stderr}"
    return proc.stdout


def dvc(*args: str, cwd: Path) -> str:
    return sh(sys.executable, "-m", "dvc", *args, cwd=cwd)


@pytest.fixture(scope="module")
def dvc_home(tmp_path_factory) -> Path:
    """Isolated DVC/git settings (site cache, global config, identity) shared by this module."""
    home = tmp_path_factory.mktemp("dvc-home")
    (home / "gitconfig").write_text("[user]\n\temail = ci@example.org\n\tname = ci\n[init]\n\tdefaultBranch = main\n")
    return home


@pytest.fixture(autouse=True)
def dvc_env(dvc_home, monkeypatch):
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(dvc_home / "site-cache"))
    monkeypatch.setenv("DVC_GLOBAL_CONFIG_DIR", str(dvc_home / "dvc-global"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(dvc_home / "gitconfig"))


@pytest.fixture(scope="module")
def template(dvc_home) -> Path:
    """A committed git + DVC repo with one stage (a tiny Parquet dataset), pushed to a local remote."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DVC_NO_ANALYTICS", "1")
    mp.setenv("DVC_SITE_CACHE_DIR", str(dvc_home / "site-cache"))
    mp.setenv("DVC_GLOBAL_CONFIG_DIR", str(dvc_home / "dvc-global"))
    mp.setenv("GIT_CONFIG_GLOBAL", str(dvc_home / "gitconfig"))
    root = dvc_home / "template"
    root.mkdir()
    sh("git", "init", "-q", cwd=root)
    dvc("init", "-q", cwd=root)
    (root / ".dvc" / "config").write_text(
        "[core]\n    analytics = false\n    remote = local\n"
        f"    site_cache_dir = {dvc_home / 'site-cache'}\n"
        f"['remote \"local\"']\n    url = {dvc_home / 'remote'}\n")
    (root / "make_data.py").write_text(MAKE_DATA)
    (root / "params.yaml").write_text(yaml.safe_dump({"datasets": {"tiny": {"source": "local", "rows": 50}}}))
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"fetch": {
        "cmd": f"{sys.executable} make_data.py ${{datasets.tiny.rows}}",
        "deps": ["make_data.py"],
        "params": ["datasets.tiny"],
        "outs": ["datasets/tiny/frames.parquet", "datasets/tiny/DATA_VERSION.json"],
        "metrics": [{"metrics/tiny/fetch.json": {"cache": False}}],
    }}}))
    dvc("repro", "-q", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-q", "-m", "data", cwd=root)
    dvc("push", "-q", cwd=root)
    mp.undo()
    return root


@pytest.fixture
def repo(template, tmp_path) -> Path:
    """A private copy of the template repo (same remote, same DVC cache contents)."""
    root = tmp_path / "repo"
    shutil.copytree(template, root, symlinks=True)
    return root


def test_release_pins_tags_and_restores_byte_identical(repo, tmp_path):
    frames = repo / "datasets/tiny/frames.parquet"
    head = sh("git", "rev-parse", "HEAD", cwd=repo).strip()
    pin = release("1.0.0", root=repo)

    # the pin: DATA_VERSION of the dataset, md5s equal to dvc.lock, the commit that holds dvc.lock
    assert pin["tag"] == "data-1.0.0" and pin["git_commit"] == head
    assert pin["datasets"]["tiny"]["counts"]["read"] == 50
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    lock_md5 = {o["path"]: o["md5"] for o in lock["stages"]["fetch"]["outs"]}
    assert {p: v["md5"] for p, v in pin["dvc_outs"].items()} == lock_md5
    assert hashlib.md5(frames.read_bytes()).hexdigest() == pin["dvc_outs"]["datasets/tiny/frames.parquet"]["md5"]
    assert json.loads((repo / "releases/1.0.0.json").read_text())["git_commit"] == head
    # committed and tagged: the tree is clean and the tag points at the pin commit
    assert sh("git", "status", "--porcelain", cwd=repo) == ""
    assert sh("git", "rev-parse", "data-1.0.0^{commit}", cwd=repo) == sh("git", "rev-parse", "HEAD", cwd=repo)

    # a later change to the data, released as 2.0.0, must not affect what 1.0.0 restores
    original = sha256(frames)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["datasets"]["tiny"]["rows"] = 70
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    dvc("repro", "-q", cwd=repo)
    sh("git", "commit", "-q", "-am", "more data", cwd=repo)
    release("2.0.0", root=repo, push=True)
    assert sha256(frames) != original

    # fresh clone at the 1.0.0 tag + dvc pull → byte-identical files
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", "--branch", "data-1.0.0", str(repo), str(clone), cwd=tmp_path)
    dvc("pull", "-q", cwd=clone)
    assert sha256(clone / "datasets/tiny/frames.parquet") == original
    assert pq.read_table(clone / "datasets/tiny/frames.parquet").num_rows == 50

    # dvc get --rev of each tag, without a clone of our own
    dvc("get", "--rev", "data-1.0.0", str(repo), "datasets/tiny/frames.parquet", "-o", str(tmp_path / "v1.parquet"), cwd=tmp_path)
    dvc("get", "--rev", "data-2.0.0", str(repo), "datasets/tiny/frames.parquet", "-o", str(tmp_path / "v2.parquet"), cwd=tmp_path)
    assert sha256(tmp_path / "v1.parquet") == original
    assert sha256(tmp_path / "v2.parquet") == sha256(frames)


def test_release_refuses_existing_tag_dirty_tree_and_stale_lock(repo):
    release("1.0", root=repo)
    with pytest.raises(ReleaseError, match="tag data-1.0 already exists"):
        release("1.0", root=repo)

    (repo / "notes.txt").write_text("uncommitted\n")
    with pytest.raises(ReleaseError, match=r"dirty(.|\n)*notes.txt"):
        release("1.1", root=repo)
    (repo / "notes.txt").unlink()

    # data changed behind DVC's back: the pin would name data nobody can pull
    pq.write_table(pa.table({"frame_id": ["x"]}), repo / "datasets/tiny/frames.parquet")
    with pytest.raises(ReleaseError, match="does not match dvc.lock"):
        release("1.1", root=repo)
    assert not (repo / "releases/1.1.json").exists()
    assert "data-1.1" not in sh("git", "tag", cwd=repo).split()

    with pytest.raises(ReleaseError, match="not a valid release name"):
        release("../evil", root=repo)


def test_release_requires_every_dataset_version(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["datasets"]["other"] = {"source": "local"}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    sh("git", "commit", "-q", "-am", "declare another dataset", cwd=repo)
    with pytest.raises(ReleaseError, match="datasets/other/DATA_VERSION.json is missing"):
        release("3.0", root=repo)


def test_dvc_outs_reads_dot_dvc_files(repo):
    data = repo / "extra" / "table.parquet"
    data.parent.mkdir()
    pq.write_table(pa.table({"a": [1, 2, 3]}), data)
    dvc("add", "-q", "extra/table.parquet", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    outs = dvc_outs(repo)
    assert outs["extra/table.parquet"]["md5"] == hashlib.md5(data.read_bytes()).hexdigest()
    assert outs["extra/table.parquet"]["stage"] == "extra/table.parquet.dvc"
    assert "datasets/tiny/frames.parquet" in outs
