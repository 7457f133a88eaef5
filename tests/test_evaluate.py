"""The evaluate stage: one row per frame (zero-shot) or per fold row (fold-trained), skipped rows
with reasons, counts that add up, and byte-identical outputs whatever the executor (in-process or
a 2-worker Dask LocalCluster) and `chunk_rows`, on real MP-20 structures."""

from __future__ import annotations

import ast
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xtalbench.core.project import Paths, read_table, write_parquet
from xtalbench.core.schema import frames_table, from_atoms

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MP20 = DATA / "mp20-subset" / "mp20_subset.parquet"
GESBTE = DATA / "models" / "mace_swa_GeSbTe.model"
EMT_ELEMENTS = {"H", "C", "N", "O", "Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au"}


def emt_dataset() -> list[dict]:
    """Cu/Al/Ni cells EMT covers, plus one Fe cell it does not."""
    from ase.build import bulk

    frames = []
    for i, (element, a) in enumerate([("Cu", 3.61), ("Al", 4.05), ("Ni", 3.52), ("Fe", 2.87), ("Cu", 3.7)]):
        atoms = bulk(element, "bcc" if element == "Fe" else "fcc", a=a, cubic=True).repeat((1, 1, 1 + i % 2))
        atoms.rattle(0.05, seed=i)
        frames.append(from_atoms(atoms, frame_id=f"x{4 - i}", material_id=f"mat-{i}", source="test"))
    return frames


def mp20_frames(select) -> list[dict]:
    """Frames of the MP-20 structures whose element set passes `select`, in file order."""
    from pymatgen.core import Structure

    from xtalbench.core.schema import from_structure

    records = pq.read_table(MP20, columns=["material_id", "elements", "cif"]).to_pylist()
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, record in enumerate(records):
            if select(i, set(ast.literal_eval(record["elements"]))):
                structure = Structure.from_str(record["cif"], fmt="cif")
                rows.append(from_structure(structure, frame_id=record["material_id"], material_id=record["material_id"], source="shared"))
    return rows


@pytest.fixture
def repo(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    shutil.copy(ROOT / "models" / "emt.yaml", tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    frames = emt_dataset()
    write_parquet(frames_table(frames), Paths("toy").dedup)
    return tmp_path, frames


@pytest.fixture(scope="module")
def mp20_emt(tmp_path_factory) -> Path:
    """All 26 MP-20 structures EMT covers, interleaved with 30 it does not (real structures)."""
    others: list[int] = []

    def select(i: int, elements: set[str]) -> bool:
        if elements <= EMT_ELEMENTS:
            return True
        if len(others) < 30:
            others.append(i)
            return True
        return False

    path = tmp_path_factory.mktemp("mp20") / "frames.parquet"
    write_parquet(frames_table(mp20_frames(select)), path, row_group_size=16)
    return path


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, Client(cluster) as dask_client:
        yield dask_client


PARAMS = {"evaluate": {"device": "cpu", "dtype": None, "batch_size": None}}


def test_zero_shot_predicts_each_frame_once_and_records_skips(repo):
    from ase.calculators.emt import EMT

    from xtalbench.core.schema import to_atoms
    from xtalbench.evaluate.cli import evaluate_dataset
    from xtalbench.evaluate.stage import PREDICTIONS_SCHEMA, SKIPPED_SCHEMA

    root, frames = repo
    summary = evaluate_dataset("toy", "emt", PARAMS, Paths("toy"), score=False, progress=False)
    table = read_table(Paths("toy").predictions("emt"))
    skipped = read_table(root / "datasets" / "toy" / "predictions" / "emt.skipped.parquet")
    assert table.schema.equals(PREDICTIONS_SCHEMA) and skipped.schema.equals(SKIPPED_SCHEMA)
    # one row per supported frame, in input order; the Fe frame is skipped with its reason
    assert table["frame_id"].to_pylist() == ["x4", "x3", "x2", "x0"]
    assert skipped.to_pylist() == [{"frame_id": "x1", "strategy": None, "fold": None, "field": "numbers", "reason": "element(s) Fe not supported by model 'emt'"}]
    throughput = summary["throughput"]
    assert (throughput["rows_in"], throughput["rows_predicted"], throughput["rows_skipped"]) == (5, 4, 1)
    assert throughput["structures"] == 4 and throughput["atoms"] == sum(table["nsites"].to_pylist())
    assert throughput["seconds"] > 0 and throughput["structures_per_s"] == pytest.approx(4 / throughput["seconds"], rel=0.1)
    assert table["strategy"].null_count == 4 and table["fold"].null_count == 4
    by_id = {f["frame_id"]: f for f in frames}
    for row in table.to_pylist():
        atoms = to_atoms(by_id[row["frame_id"]], with_labels=False)
        atoms.calc = EMT()
        assert row["energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-12)
        np.testing.assert_allclose(row["forces"], atoms.get_forces().ravel(), atol=1e-12)
        assert len(row["stress"]) == 6 and row["nsites"] == len(atoms)
    # no temporary files are left beside the outputs
    assert sorted(p.name for p in (root / "datasets" / "toy" / "predictions").iterdir()) == ["emt.parquet", "emt.skipped.parquet"]


def test_predictions_are_byte_identical_on_rerun(repo):
    from xtalbench.evaluate.cli import evaluate_dataset

    path = Paths("toy").predictions("emt")
    evaluate_dataset("toy", "emt", PARAMS, Paths("toy"), score=False, progress=False)
    first = path.read_bytes()
    evaluate_dataset("toy", "emt", PARAMS, Paths("toy"), score=False, progress=False)
    assert path.read_bytes() == first


def test_score_model_receives_resolved_spec_predictions_and_throughput(repo, monkeypatch):
    import xtalbench.evaluate.metrics as metrics
    from xtalbench.evaluate.cli import evaluate_dataset

    calls = []
    monkeypatch.setattr(metrics, "score_model", lambda *args: calls.append(args) or {"ok": True})
    summary = evaluate_dataset("toy", "emt", PARAMS, Paths("toy"), score=True, progress=False)
    ((dataset, spec, predictions, params, throughput),) = calls
    assert dataset == "toy" and spec.name == "emt" and spec.energy_kind == "total"
    assert Path(predictions) == Paths("toy").predictions("emt") and params is PARAMS  # scoring streams the file
    assert read_table(predictions).num_rows == 4
    assert {"device", "device_name", "structures_per_s", "atoms_per_s", "batch_size", "dtype", "torch_version", "threads"} <= set(throughput)
    import torch

    assert throughput["threads"] == torch.get_num_threads()
    assert summary["metrics"] == {"ok": True}


def test_fold_trained_model_without_folds_is_an_error(repo, tmp_path):
    from xtalbench.evaluate.stage import evaluate
    from xtalbench.models import load_spec

    spec = load_spec(ROOT / "models" / "mace-tiny.yaml")
    with pytest.raises(ValueError, match="fold-trained"):
        evaluate("toy", spec, frames_table(emt_dataset()), tmp_path / "p.parquet", folds=[])


def test_missing_input_column_names_the_field(tmp_path):
    from xtalbench.evaluate.stage import evaluate
    from xtalbench.models import load_spec

    frames = frames_table(emt_dataset()).drop_columns(["positions"])
    with pytest.raises(ValueError, match="field 'positions' missing"):
        evaluate("toy", load_spec(ROOT / "models" / "emt.yaml"), frames, tmp_path / "p.parquet")
    assert not (tmp_path / "p.parquet").exists()


def test_unsupported_mask_matches_a_per_row_check(mp20_emt):
    from xtalbench.core.schema import atomic_number
    from xtalbench.evaluate.stage import unsupported_mask
    from xtalbench.models import unsupported_elements

    table = pq.read_table(mp20_emt)
    supported = frozenset(atomic_number(e, "test") for e in EMT_ELEMENTS)
    mask = unsupported_mask(table["numbers"], supported)
    expected = [bool(unsupported_elements(row, supported)) for row in table.select(["numbers"]).to_pylist()]
    assert mask.tolist() == expected and sum(expected) == 30
    assert not unsupported_mask(table["numbers"], None).any()


def test_aligned_chunk_rows_is_a_multiple_of_the_batch():
    from xtalbench.evaluate.stage import aligned_chunk_rows

    assert aligned_chunk_rows(2000, 32) == 2016 and aligned_chunk_rows(2000, 1) == 2000
    assert aligned_chunk_rows(5, 32) == 32 and aligned_chunk_rows(64, 32) == 64


def _run(spec_path, frames, out: Path, **kwargs):
    from xtalbench.evaluate.stage import evaluate
    from xtalbench.models import load_spec

    return evaluate("toy", load_spec(spec_path), frames, out, device="cpu", progress=False, **kwargs)


def test_zero_shot_dask_and_any_chunking_give_identical_bytes(mp20_emt, tmp_path, client):
    """EMT on real MP-20 structures: chunk sizes 7 and 1000 in-process and 16 on two Dask workers
    write the same predictions and skipped files, byte for byte."""
    emt = ROOT / "models" / "emt.yaml"
    runs = {
        "local7": {"executor": "local", "chunk_rows": 7},
        "local1000": {"executor": "local", "chunk_rows": 1000},
        "dask16": {"executor": "dask", "chunk_rows": 16, "client": client, "window": 3},
    }
    results = {name: _run(emt, mp20_emt, tmp_path / name / "emt.parquet", compute=compute) for name, compute in runs.items()}
    for name in ("local1000", "dask16"):
        assert results[name].predictions.read_bytes() == results["local7"].predictions.read_bytes()
        assert results[name].skipped.read_bytes() == results["local7"].skipped.read_bytes()
    t = results["dask16"].throughput
    assert t["executor"] == "dask" and t["chunks"] == 2 and t["chunk_rows"] == 16  # 26 supported rows
    assert results["local7"].throughput["chunks"] == 4
    assert (t["rows_in"], t["rows_predicted"], t["rows_skipped"]) == (56, 26, 30)
    predictions = pq.read_table(results["dask16"].predictions)
    all_ids = pq.read_table(mp20_emt, columns=["frame_id", "elements"]).to_pylist()
    assert predictions["frame_id"].to_pylist() == [r["frame_id"] for r in all_ids if set(r["elements"]) <= EMT_ELEMENTS]
    skipped = pq.read_table(results["dask16"].skipped).to_pylist()
    assert all(r["reason"].startswith("element(s) ") and r["field"] == "numbers" for r in skipped)
    assert len({r["frame_id"] for r in skipped} | set(predictions["frame_id"].to_pylist())) == 56
    assert len(client.scheduler_info()["workers"]) == 2


@pytest.fixture(scope="module")
def gesbte_fold_setup(tmp_path_factory):
    """A fold-trained spec (kind mace-trained) whose every fold checkpoint is the GeSbTe MACE model;
    frames: the 4 real Ge/Sb/Te MP-20 structures rattled into 16 frames, plus 4 copies of an
    oxide it cannot predict; a 2-fold split."""
    import yaml

    if not GESBTE.exists():
        pytest.skip(f"{GESBTE} not present")
    base = mp20_frames(lambda i, elements: elements <= {"Ge", "Sb", "Te"})
    assert len(base) == 4
    rng = np.random.default_rng(0)
    frames = []
    for k in range(4):
        for row in base:
            moved = dict(row)
            moved["positions"] = (np.asarray(row["positions"]) + rng.normal(0, 0.03, len(row["positions"]))).tolist()
            moved["frame_id"] = f"{row['frame_id']}-{k}"
            frames.append(moved)
    other = mp20_frames(lambda i, elements: i == 0)[0]  # NaMn(CoNi)O-type oxide: not Ge/Sb/Te
    frames += [{**other, "frame_id": f"{other['frame_id']}-x{k}"} for k in range(0, 20, 5)]
    root = tmp_path_factory.mktemp("folds")
    spec_path = root / "gst-folds.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "gst-folds", "kind": "mace-trained", "checkpoint": str(GESBTE), "licence": "MIT",
        "training_set": {"name": "test", "database": "test"}, "defaults": {"dtype": "float64", "batch_size": 4},
    }))  # fmt: skip
    table = frames_table(frames)
    ids = table["frame_id"].to_pylist()
    split_rows = [
        {"frame_id": fid, "material_id": fid, "fold": fold, "role": ["train", "val", "test"][(i + fold) % 3], "cluster": None}
        for fold in (0, 1) for i, fid in enumerate(ids)
    ]  # fmt: skip
    split = pa.Table.from_pylist(split_rows, schema=pa.schema([("frame_id", pa.string()), ("material_id", pa.string()), ("fold", pa.int32()), ("role", pa.string()), ("cluster", pa.int32())]))
    frames_path = write_parquet(table, root / "frames.parquet", row_group_size=7)
    split_path = write_parquet(split, root / "random.parquet", row_group_size=11)
    return spec_path, frames_path, split_path, split


# Across torch thread counts predictions agree within these absolute tolerances (float64 model);
# at one thread count they are identical bytes.
THREAD_TOLERANCE = {"energy": 1e-9, "forces": 1e-9, "stress": 1e-12}


def test_fold_trained_streams_each_fold_identically_whatever_the_chunking(gesbte_fold_setup, tmp_path):
    """The GeSbTe MACE as a fold-trained model. Two runs with the same torch thread count (1, as on
    a Dask worker) that differ in chunk size (3 vs 1000 rows) write identical bytes: batches do not
    depend on the chunking. Across thread counts (1 vs 2) bits are not promised — a threaded
    reduction may sum in another order, and on some CPUs it does — so a 2-thread run must agree
    within THREAD_TOLERANCE (float64: energy 1e-9 eV, forces 1e-9 eV/Å, stress 1e-12 eV/Å³),
    with every other column identical. (The Dask executor itself is covered with EMT above:
    loading MACE on two workers takes ~15 s here.)"""
    import torch

    from xtalbench.models import load_model, load_spec

    spec_path, frames_path, split_path, split = gesbte_fold_setup
    folds = [{"strategy": "random", "fold": 1}, {"strategy": "random", "fold": 0}]
    kwargs = {"splits": {"random": split_path}, "folds": folds}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        local = _run(spec_path, frames_path, tmp_path / "a" / "p.parquet", compute={"executor": "local", "chunk_rows": 3}, **kwargs)
        remote = _run(spec_path, frames_path, tmp_path / "b" / "p.parquet", compute={"executor": "local", "chunk_rows": 1000}, **kwargs)
        torch.set_num_threads(2)
        threaded = _run(spec_path, frames_path, tmp_path / "c" / "p.parquet", compute={"executor": "local", "chunk_rows": 1000}, **kwargs)
    finally:
        torch.set_num_threads(threads)
    assert local.throughput["chunk_rows"] == 4 and remote.throughput["chunk_rows"] == 1000  # rounded up to the batch size
    assert remote.predictions.read_bytes() == local.predictions.read_bytes()
    assert remote.skipped.read_bytes() == local.skipped.read_bytes()
    assert threaded.skipped.read_bytes() == local.skipped.read_bytes()
    one, two = pq.read_table(local.predictions), pq.read_table(threaded.predictions)
    numeric = list(THREAD_TOLERANCE)
    assert one.drop_columns(numeric).equals(two.drop_columns(numeric))
    for column, atol in THREAD_TOLERANCE.items():
        a = np.concatenate([np.ravel(v) for v in one[column].to_pylist()]).astype(np.float64)
        b = np.concatenate([np.ravel(v) for v in two[column].to_pylist()]).astype(np.float64)
        np.testing.assert_allclose(b, a, rtol=0, atol=atol, err_msg=f"{column}: 1 vs 2 torch threads")

    table = pq.read_table(remote.predictions)
    skipped = pq.read_table(remote.skipped)
    expected_rows, expected_skips = [], []
    other = {r["frame_id"] for r in pq.read_table(frames_path, columns=["frame_id", "elements"]).to_pylist() if "O" in r["elements"]}
    frame_order = pq.read_table(frames_path, columns=["frame_id"])["frame_id"].to_pylist()
    for entry in folds:  # folds in params order, rows in frames order
        chosen = {r["frame_id"] for r in split.to_pylist() if r["fold"] == entry["fold"] and r["role"] != "train"}
        expected_rows += [(fid, entry["fold"]) for fid in frame_order if fid in chosen and fid not in other]
        expected_skips += [(fid, entry["fold"]) for fid in frame_order if fid in chosen and fid in other]
    assert list(zip(table["frame_id"].to_pylist(), table["fold"].to_pylist())) == expected_rows
    assert list(zip(skipped["frame_id"].to_pylist(), skipped["fold"].to_pylist())) == expected_skips
    assert set(table["strategy"].to_pylist()) == {"random"} and set(skipped["reason"].to_pylist()) == {"element(s) O, Na, Mn, Co, Ni not supported by model 'gst-folds'"}
    t = remote.throughput
    assert t["rows_in"] == len(expected_rows) + len(expected_skips) == t["rows_predicted"] + t["rows_skipped"]
    assert t["structures_per_s"] > 0 and t["atoms"] == sum(table["nsites"].to_pylist())

    # values: the model run directly on the same rows, in one batch
    predictor = load_model(load_spec(spec_path), dtype="float64", checkpoint=GESBTE, progress=False)
    first = [fid for fid, fold in expected_rows if fold == 1]
    frames = {r["frame_id"]: r for r in pq.read_table(frames_path).to_pylist()}
    direct = predictor.predict([frames[f] for f in first], batch_size=64)
    got = table.slice(0, len(first))
    np.testing.assert_allclose(got["energy"].to_numpy(), direct["energy"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.concatenate(got["forces"].to_pylist()), np.concatenate(direct["forces"]).ravel(), atol=1e-9)
    np.testing.assert_allclose(np.asarray(got["stress"].to_pylist()), direct["stress"], atol=1e-9)


def test_every_predicting_process_uses_the_run_thread_count():
    """Dask workers start with 1 torch thread; CHGNet (float32) changes in the last bit between 1
    and 2 threads, so prediction pins the run's count in whatever process it runs."""
    import torch

    from xtalbench.evaluate.stage import reproducible_inference

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with reproducible_inference(2):
            assert torch.get_num_threads() == 2 and not torch._C._get_graph_executor_optimize()
        with reproducible_inference(None):  # no pin: leaves the count alone
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
