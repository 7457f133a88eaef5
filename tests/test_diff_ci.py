"""CI wiring: the GitHub Actions workflow (checked for syntax and structure) and scripts/ci_benchmark.sh
run end to end on a temporary git + DVC repository."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "benchmark.yml"
SCRIPT = ROOT / "scripts" / "ci_benchmark.sh"


def steps() -> list[dict]:
    data = yaml.safe_load(WORKFLOW.read_text())
    return data["jobs"]["benchmark"]["steps"]


def test_workflow_structure():
    data = yaml.safe_load(WORKFLOW.read_text())
    on = data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in on
    assert data["permissions"]["pull-requests"] == "write"
    job = data["jobs"]["benchmark"]
    assert job["runs-on"].startswith("ubuntu")
    st = steps()
    uses = {s["uses"].split("@")[0]: s for s in st if "uses" in s}
    assert all(re.search(r"@v\d+$", s["uses"]) for s in st if "uses" in s), "actions must be pinned to a major version"
    assert uses["actions/checkout"]["with"]["fetch-depth"] == 0
    assert str(uses["actions/setup-python"]["with"]["python-version"]) == "3.11"
    runs = [s.get("run", "") for s in st]
    order = [next(i for i, r in enumerate(runs) if cmd in r) for cmd in ("make test", "make bench", "xtalbench diff")]
    assert order == sorted(order), "tests, then the benchmark, then the diff"
    diff = next(s for s in st if "xtalbench diff" in s.get("run", ""))
    assert "--rev origin/${{ github.base_ref }}" in diff["run"] and "--md diff.md" in diff["run"]
    assert diff["continue-on-error"] is True and diff["id"] == "diff"
    comment = uses["marocchino/sticky-pull-request-comment"]
    assert comment["with"]["path"] == "diff.md" and "always()" in comment["if"]
    assert st.index(comment) > st.index(diff)
    fail = st[-1]
    assert fail["if"] == "steps.diff.outcome == 'failure'" and "exit 1" in fail["run"]
    # every ${{ … }} expression is closed
    text = WORKFLOW.read_text()
    assert text.count("${{") == text.count("}}")


def test_ci_script_syntax():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    assert os.access(SCRIPT, os.X_OK)


STAGE = """
import json, sys, yaml
p = yaml.safe_load(open("params.yaml"))["quality"]
json.dump({"model": "m", "strategies": {"loco": {"mean": {"test": {"e_form_mae_meV_per_atom": p}}}}},
          open("metrics/m.json", "w"))
"""


def sh(*cmd: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)


@pytest.fixture
def repo(tmp_path) -> tuple[Path, dict]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / "site"),
           "DVC_GLOBAL_CONFIG_DIR": str(tmp_path / "dvcg"), "GIT_CONFIG_GLOBAL": str(tmp_path / "gitconfig"),
           "PYTHON": sys.executable, "DIFF_MD": str(tmp_path / "diff.md")}
    (tmp_path / "gitconfig").write_text("[user]\n\temail = ci@example.org\n\tname = ci\n")
    root = tmp_path / "repo"
    (root / "metrics").mkdir(parents=True)
    assert sh("git", "init", "-q", cwd=root, env=env).returncode == 0
    assert sh(sys.executable, "-m", "dvc", "init", "-q", cwd=root, env=env).returncode == 0
    (root / "stage.py").write_text(STAGE)
    (root / "params.yaml").write_text(yaml.safe_dump({"quality": 30.0, "gates": [
        {"name": "mae", "metric": "strategies.*.mean.test.*_mae_*", "file": "metrics/*.json",
         "direction": "lower", "tolerance_rel": 0.05, "required": True}]}))
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"evaluate": {
        "cmd": f"{sys.executable} stage.py", "deps": ["stage.py"], "params": ["quality"],
        "metrics": [{"metrics/m.json": {"cache": False}}]}}}))
    return root, env


def commit(root: Path, env: dict, message: str) -> None:
    assert sh("git", "add", "-A", cwd=root, env=env).returncode == 0
    assert sh("git", "commit", "-q", "-m", message, cwd=root, env=env).returncode == 0


def set_quality(root: Path, value: float) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["quality"] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def test_ci_script_repro_then_gated_diff(repo):
    root, env = repo
    env = {**env, "XTALBENCH_ROOT": str(root)}
    # first commit: no previous commit → no baseline; the repro produces the required metric
    first = sh("bash", str(SCRIPT), cwd=root, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "no baseline" in first.stdout and json.loads((root / "metrics/m.json").read_text())
    commit(root, env, "baseline")

    set_quality(root, 40.0)              # a change that makes the error 33% worse
    commit(root, env, "worse model")
    bad = sh("bash", str(SCRIPT), cwd=root, env=env)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "regressed by 10" in bad.stdout and "| 30 | 40 |" in Path(env["DIFF_MD"]).read_text()

    commit(root, env, "results of the worse model")   # the repro'd metrics (40) are now committed
    set_quality(root, 39.0)              # better than the previous commit → passes
    commit(root, env, "slightly better")
    good = sh("bash", str(SCRIPT), cwd=root, env=env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "better" in good.stdout
