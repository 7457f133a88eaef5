"""The whole pipeline, end to end: `dvc repro` in a fresh git+DVC repository on real MP data.

The repository is a copy of this one (dvc.yaml, params.yaml, model cards, sources) with the
datasets cut to a few dozen records so the run fits the test budget.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BIN = Path(sys.executable).parent
# Small but real: enough materials for every split strategy to have a test fold.
LIMITS = {"mp20": 120, "mp-frames": 160}


# The zero-shot sets are alike: one of them stands for the five (each adds ~5 stage runs).
KEEP = ("mp20", "mp-frames", "mptrj-random-1k")


def small_params(params: dict, shared: Path) -> dict:
    params = _absolute_shared_paths(params, shared)
    params["datasets"] = {k: v for k, v in params["datasets"].items() if k in KEEP}
    for name, config in params["datasets"].items():
        config["limit"] = LIMITS.get(name, 50)
    for key, value in SMALL_OVERRIDES.items():
        section, _, leaf = key.rpartition(".")
        node = params
        for part in section.split("."):
            node = node.setdefault(part, {})
        node[leaf] = value
    return params


def _absolute_shared_paths(value, shared: Path):
    """The copy does not sit beside ../shared: point every ../shared/... param at the real folder."""
    if isinstance(value, dict):
        return {k: _absolute_shared_paths(v, shared) for k, v in value.items()}
    if isinstance(value, list):
        return [_absolute_shared_paths(v, shared) for v in value]
    if isinstance(value, str) and value.startswith("../shared/"):
        return str(shared / Path(value).relative_to("../shared"))
    return value


SMALL_OVERRIDES: dict[str, object] = {
    "train.folds": [{"strategy": "random", "fold": 0}],
    "train.max_train_frames": 40,
    "train.max_val_frames": 10,
    "train.hyper.max_num_epochs": 1,
    "split.loco.k": 3,
    "evaluate.n_bootstrap": 50,
    # the stages added after the first version, at their smallest (the full run is `make bench`)
    "finetune.datasets": {"mp20": "readout-head"},
    "finetune.strategies": {"random": [0], "loco": [0]},
    "finetune.members": 2,
    "finetune.n_bootstrap": 50,
    "finetune.learning_curve.sizes": [10, 40],
    "zeroshot.models": ["chgnet"],
    "zeroshot.datasets": ["mptrj-random-1k"],
    "zeroshot.n_bootstrap": 50,
    "diatomics.models": ["chgnet"],
    "diatomics.max_pairs": 2,
    "dynamics.models": ["chgnet"],
    "dynamics.phonons.materials": ["Si"],
    "dynamics.md.steps": 10,
    "datasets.mptrj-random-1k.sample": 12,
}


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, dict]:
    repo = tmp_path_factory.mktemp("bench") / "xtalbench"
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    for folder in ("src", "models", "pipelines"):  # pipelines/: the root repro must not reach into them
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__", "trained"))
    params = small_params(yaml.safe_load((ROOT / "params.yaml").read_text()), SHARED)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    run(["git", "init", "-q"], repo, env)
    run([str(BIN / "dvc"), "init", "-q"], repo, env)
    run([str(BIN / "dvc"), "config", "core.analytics", "false"], repo, env)
    run([str(BIN / "dvc"), "config", "core.site_cache_dir", str(repo.parent / "site-cache")], repo, env)
    run([str(BIN / "dvc"), "repro"], repo, env)
    return repo, env


def test_report_stage_depends_on_every_root_dataset():
    """Per dataset through `report-inputs@<d>` (a foreach over params `datasets`, so a new dataset
    needs no edit; tests/test_dvc_deps.py resolves it with DVC), never a whole shared folder."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    per_dataset = stages["report-inputs"]
    assert per_dataset["foreach"] == "${datasets}"
    assert {"metrics/${key}", "splits/${key}", "datasets/${key}/DATA_VERSION.json"} <= set(per_dataset["do"]["deps"])
    deps = set(stages["report"]["deps"])
    assert "report_inputs" in deps
    assert not deps & {"metrics", "datasets", "splits"}  # whole folders hold other pipelines' outputs


def test_every_stage_writes_its_outputs_and_counts_add_up(repo):
    path, _ = repo
    for name, limit in LIMITS.items():
        fetch = json.loads((path / "metrics" / name / "fetch.json").read_text())
        assert fetch["read"] == limit and fetch["kept"] + fetch["quarantined"] == limit
        frames = pq.read_table(path / "datasets" / name / "frames.parquet")
        assert frames.num_rows == fetch["kept"]


def test_second_repro_has_nothing_to_do(repo):
    path, env = repo
    out = run([str(BIN / "dvc"), "repro"], path, env)
    assert "Data and pipelines are up to date" in out, [line for line in out.splitlines() if line.startswith("Running stage")]


def test_metrics_show_lists_fetch_counts(repo):
    path, env = repo
    shown = json.loads(run([str(BIN / "dvc"), "metrics", "show", "--json"], path, env))
    flat = json.dumps(shown)
    for name in LIMITS:
        assert f"metrics/{name}/fetch.json" in flat


def test_query_counts_the_kept_rows(repo):
    path, env = repo
    out = run([str(BIN / "xtalbench"), "query", "select count(*) as n from mp20"], path, env)
    kept = json.loads((path / "metrics" / "mp20" / "fetch.json").read_text())["kept"]
    assert out.splitlines()[2].strip() == str(kept)
