"""The zero-shot and diatomics stages in the root pipeline: params, datasets and dvc.yaml agree."""

from __future__ import annotations

from pathlib import Path

import yaml

from xtalbench.core.params import parse_section
from xtalbench.diatomics.params import DiatomicsParams
from xtalbench.fetch.params import dataset_entry
from xtalbench.fetch.sources.shared import mattersim_set
from xtalbench.zeroshot.conventions import parse_level_of_theory
from xtalbench.zeroshot.params import ZeroshotParams

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_every_zeroshot_set_is_a_small_seeded_sample_with_its_level_of_theory():
    cfg = parse_section(ZeroshotParams, PARAMS, "zeroshot")
    assert len(cfg.datasets) == 5
    for name in cfg.datasets:
        entry = dataset_entry(PARAMS, name)
        assert mattersim_set(Path(entry.path)) is not None, name
        assert entry.sample is not None and entry.sample <= 200, f"{name}: the default pipeline keeps a small sample"
        parse_level_of_theory(entry.level_of_theory, name)  # raises on a missing or malformed one
    for keyword, seen in cfg.seen_sets.items():
        assert seen in cfg.datasets, keyword
    assert cfg.reference_set in cfg.datasets


def test_every_model_has_a_card():
    models = parse_section(ZeroshotParams, PARAMS, "zeroshot").models + parse_section(DiatomicsParams, PARAMS, "diatomics").models
    for model in models:
        assert (ROOT / "models" / f"{model}.yaml").exists(), model


def test_dvc_stages_span_the_params_and_feed_the_leaderboard():
    zs = STAGES["zeroshot"]
    assert zs["matrix"] == {"dataset": "${zeroshot.datasets}", "model": "${zeroshot.models}"}
    outs = set(zs["outs"])
    assert "datasets/zeroshot/${item.dataset}/${item.model}.errors.parquet" in outs
    metrics = [next(iter(m)) for m in zs["metrics"]]
    assert metrics == ["metrics/zeroshot/scores/${item.dataset}/${item.model}.json"]
    assert STAGES["diatomics"]["foreach"] == "${diatomics.models}"
    board = STAGES["leaderboard"]
    assert {"metrics/zeroshot/scores", "datasets/zeroshot", "metrics/diatomics"} <= set(board["deps"])
    board_outs = [next(iter(o)) if isinstance(o, dict) else o for o in board["outs"] + board["metrics"]]
    for out in board_outs:  # outside its own deps (no cycle) and never cached (git-tracked, dvc metrics diff)
        assert not any(out.startswith(dep + "/") for dep in board["deps"]), out
    assert all(not o[next(iter(o))].get("cache", True) for o in board["outs"] + board["metrics"])
