"""The evaluate stage for zero-shot models: one row per frame, skipped rows with reasons, determinism, scoring hand-off."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from xtalbench.project import Paths, read_table, write_parquet
from xtalbench.schema import frames_table, from_atoms

ROOT = Path(__file__).resolve().parents[1]


def emt_dataset() -> list[dict]:
    """Cu/Al/Ni cells EMT covers, plus one Fe cell it does not."""
    from ase.build import bulk

    frames = []
    for i, (element, a) in enumerate([("Cu", 3.61), ("Al", 4.05), ("Ni", 3.52), ("Fe", 2.87), ("Cu", 3.7)]):
        atoms = bulk(element, "bcc" if element == "Fe" else "fcc", a=a, cubic=True).repeat((1, 1, 1 + i % 2))
        atoms.rattle(0.05, seed=i)
        frames.append(from_atoms(atoms, frame_id=f"x{4 - i}", material_id=f"mat-{i}", source="test"))
    return frames


@pytest.fixture
def repo(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    shutil.copy(ROOT / "models" / "emt.yaml", tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    frames = emt_dataset()
    write_parquet(frames_table(frames), Paths("toy").dedup)
    return tmp_path, frames


PARAMS = {"evaluate": {"device": "cpu", "dtype": None, "batch_size": None}}


def test_zero_shot_predicts_each_frame_once_and_records_skips(repo):
    from ase.calculators.emt import EMT

    from xtalbench.commands.evaluate import evaluate_dataset
    from xtalbench.evaluate import PREDICTIONS_SCHEMA, SKIPPED_SCHEMA
    from xtalbench.schema import to_atoms

    root, frames = repo
    summary = evaluate_dataset("toy", "emt", PARAMS, Paths("toy"), score=False, progress=False)
    table = read_table(Paths("toy").predictions("emt"))
    skipped = read_table(root / "datasets" / "toy" / "predictions" / "emt.skipped.parquet")
    assert table.schema.equals(PREDICTIONS_SCHEMA) and skipped.schema.equals(SKIPPED_SCHEMA)
    # one row per supported frame, sorted by frame_id; the Fe frame is skipped with its reason
    assert table["frame_id"].to_pylist() == ["x0", "x2", "x3", "x4"]
    assert skipped.to_pylist() == [{"frame_id": "x1", "strategy": None, "fold": None, "field": "numbers", "reason": "element(s) Fe not supported by model 'emt'"}]
    throughput = summary["throughput"]
    assert (throughput["rows_in"], throughput["rows_predicted"], throughput["rows_skipped"]) == (5, 4, 1)
    assert throughput["structures"] == 4 and throughput["atoms"] == sum(table["nsites"].to_pylist())
    assert table["strategy"].null_count == 4 and table["fold"].null_count == 4
    by_id = {f["frame_id"]: f for f in frames}
    for row in table.to_pylist():
        atoms = to_atoms(by_id[row["frame_id"]], with_labels=False)
        atoms.calc = EMT()
        assert row["energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-12)
        np.testing.assert_allclose(row["forces"], atoms.get_forces().ravel(), atol=1e-12)
        assert len(row["stress"]) == 6 and row["nsites"] == len(atoms)


def test_predictions_are_byte_identical_on_rerun(repo):
    from xtalbench.commands.evaluate import evaluate_dataset

    root, _ = repo
    path = Paths("toy").predictions("emt")
    evaluate_dataset("toy", "emt", PARAMS, Paths("toy"), score=False, progress=False)
    first = path.read_bytes()
    evaluate_dataset("toy", "emt", PARAMS, Paths("toy"), score=False, progress=False)
    assert path.read_bytes() == first


def test_score_model_receives_resolved_spec_predictions_and_throughput(repo, monkeypatch):
    import xtalbench.metrics as metrics
    from xtalbench.commands.evaluate import evaluate_dataset

    calls = []
    monkeypatch.setattr(metrics, "score_model", lambda *args: calls.append(args) or {"ok": True})
    summary = evaluate_dataset("toy", "emt", PARAMS, Paths("toy"), score=True, progress=False)
    (dataset, spec, predictions, params, throughput), = calls
    assert dataset == "toy" and spec.name == "emt" and spec.energy_kind == "total"
    assert isinstance(predictions, pa.Table) and predictions.num_rows == 4 and params is PARAMS
    assert {"device", "device_name", "structures_per_s", "atoms_per_s", "batch_size", "dtype", "torch_version"} <= set(throughput)
    assert summary["metrics"] == {"ok": True}


def test_fold_trained_model_without_folds_is_an_error(repo):
    from xtalbench.evaluate import evaluate
    from xtalbench.models import load_spec

    spec = load_spec(ROOT / "models" / "mace-tiny.yaml")
    with pytest.raises(ValueError, match="fold-trained"):
        evaluate("toy", spec, frames_table(emt_dataset()), folds=[])
