"""benchmarks/bench_mace_mp.py builds MACE-MP-0-sized models: the parameter counts match the
published checkpoints, and xtalbench's batched predictor runs them from a .model file."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_medium_architecture_has_the_published_size_and_predicts(tmp_path):
    import torch

    from xtalbench.models.mace import MacePredictor

    bench = load("bench_mace_mp")
    channels, max_L, r_max, card = bench.ARCHITECTURES["mace-mp-medium"]
    model = bench.build_model(channels, max_L, r_max)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == pytest.approx(4.69e6, rel=0.01)  # MACE-MP-0 medium (2023-12-03-mace-128-L1): 4.7M parameters
    assert (ROOT / card).exists()
    path = tmp_path / "medium.model"
    torch.save(model, path)
    frames = load("bench_scale").synthetic_chunk(0, 3, seed=1).to_pylist()
    out = MacePredictor.from_file(path, dtype="float32", progress=False).predict(frames, batch_size=2)
    assert np.isfinite(out["energy"]).all() and len(out["energy"]) == 3
    assert [f.shape for f in out["forces"]] == [(len(r["numbers"]), 3) for r in frames]
