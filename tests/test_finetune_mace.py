"""MACE fine-tuning from a foundation file through mace_run_train (`train.hyper.foundation_model`).

Offline the foundation is the real GeSbTe MACE in ../shared/data (with network: MACE-MP-0 by name).
Replay (multi-head) fine-tuning needs the foundation's training data, which is a download, so
`multiheads_finetuning: "False"` fine-tunes the foundation's own weights on the new data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

FOUNDATION = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "models" / "mace_swa_GeSbTe.model"
pytestmark = pytest.mark.skipif(not FOUNDATION.exists(), reason=f"{FOUNDATION} not present")


def _rows(n: int, seed: int) -> list[dict]:
    """Rock-salt Ge/Sb/Te cells labelled by the foundation itself plus a smooth, known shift."""
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    import mace  # noqa: F401  (before e3nn: see stack-notes)
    from ase.build import bulk
    from mace.calculators import MACECalculator

    calc = MACECalculator(model_paths=str(FOUNDATION), device="cpu", default_dtype="float64")
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        atoms = bulk("NaCl", "rocksalt", a=6.0 + 0.05 * i)
        atoms.numbers = rng.choice([32, 51, 52], size=len(atoms))
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        atoms.calc = calc
        rows.append({
            "frame_id": f"s{i}", "nsites": len(atoms), "numbers": atoms.numbers.tolist(), "positions": atoms.positions.ravel().tolist(),
            "lattice": atoms.cell.array.ravel().tolist(), "pbc": [True] * 3,
            "REF_energy": float(atoms.get_potential_energy()) + 0.2 * len(atoms), "REF_forces": atoms.get_forces(),
        })
    return rows


def test_fine_tuning_starts_from_the_foundation_weights(tmp_path):
    import torch

    from xtalbench.train.stage import FoldData, train_fold

    data = FoldData(train=_rows(8, 0), valid=_rows(3, 1))
    hyper = {"foundation_model": str(FOUNDATION), "multiheads_finetuning": "False", "max_num_epochs": 1,
             "batch_size": 4, "valid_batch_size": 4, "default_dtype": "float64", "lr": 0.001}
    record = train_fold(data, tmp_path / "ft.model", "total", hyper=hyper, device="cpu", seed=0, threads=1)
    tuned = torch.load(record["model_file"], map_location="cpu", weights_only=False)
    foundation = torch.load(FOUNDATION, map_location="cpu", weights_only=False)
    # the foundation's architecture (64 channels, 223k parameters), not train.hyper's from-scratch one:
    # every interaction and product block has the foundation's shapes
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items() if k.startswith(("interactions", "products"))}
    found, got = shapes(foundation), shapes(tuned)
    assert len(found) > 10 and all(got.get(k) == shape for k, shape in found.items())
    assert float(tuned.r_max) == pytest.approx(float(foundation.r_max))
    before, after = foundation.state_dict(), tuned.state_dict()
    assert any(not torch.equal(after[k], before[k]) for k in shapes(foundation))  # and it trained
