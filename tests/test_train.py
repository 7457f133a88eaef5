"""The train stage: fold selection, targets, the mace_run_train command, and a real (tiny) training run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
import mace  # noqa: E402,F401
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402

from xtalbench.core.project import Paths, write_parquet  # noqa: E402
from xtalbench.core.schema import frames_table, from_atoms  # noqa: E402
from xtalbench.train.stage import fold_rows, mace_command, prepare_fold  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

TINY_HYPER = {"num_channels": 8, "batch_size": 3, "valid_batch_size": 8, "max_num_epochs": 12, "lr": 0.02,
              "energy_weight": 10, "forces_weight": 10}  # fmt: skip


def emt_frames(n: int = 30, seed: int = 0) -> list[dict]:
    """Rattled, strained fcc Cu/Al/Ni cells labelled with EMT energies and forces (real physics, cheap)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        element, a0 = [("Cu", 3.61), ("Al", 4.05), ("Ni", 3.52)][i % 3]
        atoms = bulk(element, "fcc", a=a0 * (1 + 0.01 * rng.normal()), cubic=True)
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_potential_energy()
        frame = from_atoms(atoms, frame_id=f"f{i:03d}", material_id=f"m{i:03d}", source="test",
                           formation_energy_per_atom=float(atoms.get_potential_energy()) / len(atoms))  # fmt: skip
        frames.append(frame)
    return frames


def split_table(frames: list[dict], strategy: str = "random", n_folds: int = 1) -> pa.Table:
    rows = []
    for fold in range(n_folds):
        for i, f in enumerate(frames):
            role = ("train", "train", "train", "val", "test")[(i + fold) % 5]
            rows.append({"frame_id": f["frame_id"], "material_id": f["material_id"], "fold": fold, "role": role, "cluster": None})
    schema = pa.schema([("frame_id", pa.string()), ("material_id", pa.string()), ("fold", pa.int32()), ("role", pa.string()), ("cluster", pa.int32())])
    return pa.Table.from_pylist(rows, schema=schema)


def test_fold_rows_and_formation_target_skip_unlabelled():
    frames = emt_frames(10)
    frames[0]["formation_energy_per_atom"] = None  # a train row without the label
    roles = fold_rows(frames_table(frames), split_table(frames), "random", 0)
    assert [roles[r].num_rows for r in ("train", "val", "test")] == [6, 2, 2]
    data = prepare_fold(roles, "formation")
    assert len(data.train) == 5 and data.skipped == [{"frame_id": "f000", "role": "train", "reason": "no formation_energy_per_atom label"}]
    row = data.train[0]
    assert row["REF_energy"] == pytest.approx(row["formation_energy_per_atom"] * row["nsites"])
    assert not np.any(row["REF_forces"])
    total = prepare_fold(roles, "total", max_train_frames=3, seed=4)
    assert len(total.train) == 3 and total.capped == 3 and total.skipped == []
    assert [r["frame_id"] for r in total.train] == [r["frame_id"] for r in prepare_fold(roles, "total", max_train_frames=3, seed=4).train]
    np.testing.assert_allclose(total.train[0]["REF_forces"].ravel(), total.train[0]["forces"])
    with pytest.raises(Exception, match="no fold 7"):
        fold_rows(frames_table(frames), split_table(frames), "random", 7)


def test_mace_command_formation_uses_zero_e0s_and_no_force_weight(tmp_path):
    cmd = mace_command("m", tmp_path / "t.xyz", None, tmp_path, "formation", [29, 13], {"max_num_epochs": 2}, "cpu", 3)
    assert cmd[cmd.index("--E0s") + 1] == "{13: 0.0, 29: 0.0}"
    assert cmd[cmd.index("--forces_weight") + 1] == "0.0" and cmd[cmd.index("--max_num_epochs") + 1] == "2"
    assert "--valid_fraction" in cmd
    total = mace_command("m", tmp_path / "t.xyz", tmp_path / "v.xyz", tmp_path, "total", [29], {}, "cpu", 3)
    assert total[total.index("--E0s") + 1] == "average" and "--forces_weight" not in total and "--valid_file" in total


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`train_dataset` end to end on a tiny dataset 'toy' (total energies + forces), in a temp repo."""
    from xtalbench.train.cli import train_dataset

    root = tmp_path_factory.mktemp("repo")
    (root / "models").mkdir()
    shutil.copy(ROOT / "models" / "mace-tiny.yaml", root / "models")
    frames = emt_frames(30)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        paths = Paths("toy")
        write_parquet(frames_table(frames), paths.dedup)
        write_parquet(split_table(frames), paths.split("random"))
        params = {"model": "mace-tiny", "folds": [{"strategy": "random", "fold": 0}], "device": "cpu", "seed": 1, "threads": 1, "hyper": TINY_HYPER}
        summary = train_dataset("toy", params, paths)
    finally:
        os.chdir(cwd)
    return root, frames, summary


def test_train_writes_a_model_that_beats_a_constant_baseline(trained):
    from xtalbench.models import load_model, load_spec

    root, frames, summary = trained
    model_file = root / "models" / "trained" / "toy" / "random-0.model"
    assert model_file.exists() and (root / "models" / "trained" / "toy" / "random-0.log").stat().st_size > 0
    record = summary["folds"]["random-0"]
    assert record["n_train"] == 18 and record["n_valid"] == 6 and record["energy_kind"] == "total"
    assert summary["totals"]["models"] == 1 and (root / "metrics" / "toy" / "train.json").exists()

    train_ids = {f["frame_id"] for i, f in enumerate(frames) if i % 5 < 3}
    train = [f for f in frames if f["frame_id"] in train_ids]
    predictor = load_model(load_spec("mace-tiny", root / "models"), checkpoint=model_file, dtype="float64", progress=False)
    out = predictor.predict(train)
    n = np.array([f["nsites"] for f in train])
    e_true = np.array([f["energy"] for f in train]) / n
    e_pred = out["energy"] / n
    baseline = np.abs(e_true - e_true.mean()).mean()
    assert np.abs(e_pred - e_true).mean() < 0.8 * baseline
    f_true = np.concatenate([np.reshape(f["forces"], (-1, 3)) for f in train])
    f_pred = np.concatenate(out["forces"])
    assert np.abs(f_pred - f_true).mean() < 0.5 * np.abs(f_true).mean()  # better than predicting zero forces


def test_evaluate_fold_trained_model_predicts_val_and_test_rows(trained):
    from xtalbench.core.project import read_table
    from xtalbench.evaluate.cli import evaluate_dataset
    from xtalbench.evaluate.stage import PREDICTIONS_SCHEMA

    root, frames, _ = trained
    cwd = os.getcwd()
    os.chdir(root)
    try:
        params = {"train": {"folds": [{"strategy": "random", "fold": 0}]}, "evaluate": {"device": "cpu", "dtype": "float32"}}
        summary = evaluate_dataset("toy", "mace-tiny", params, Paths("toy"), score=False, progress=False)
        table = read_table(Paths("toy").predictions("mace-tiny"))
    finally:
        os.chdir(cwd)
    expected = sorted(f["frame_id"] for i, f in enumerate(frames) if i % 5 >= 3)
    assert table.schema.equals(PREDICTIONS_SCHEMA)
    assert table["frame_id"].to_pylist() == expected
    assert set(table["strategy"].to_pylist()) == {"random"} and set(table["fold"].to_pylist()) == {0}
    assert summary["throughput"]["rows_predicted"] == len(expected) and summary["throughput"]["dtype"] == "float32"
    assert summary["throughput"]["structures_per_s"] > 0
