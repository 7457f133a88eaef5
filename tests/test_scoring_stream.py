"""score_model streams: predictions and dedup.parquet are read in small batches / row groups
(never `pq.read_table`), and the outputs are byte-identical to scoring the whole table at once."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xtalbench.core.project import write_parquet
from xtalbench.evaluate import scoring

_spec = importlib.util.spec_from_file_location("scoring_cases", Path(__file__).with_name("test_scoring.py"))
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)
frames_ds, mp_ds = cases.frames_ds, cases.mp_ds  # fixtures


def outputs(dataset: str, model: str) -> dict[str, bytes]:
    files = [Path(f"metrics/{dataset}/{model}.json"), *sorted(Path(f"plots/{dataset}/{model}").iterdir())]
    return {str(p): p.read_bytes() for p in files}


def streamed(monkeypatch, dataset: str, table: pa.Table, spec, batch_rows: int = 2) -> tuple[dict, dict[str, bytes]]:
    """Rewrite dedup.parquet in 3-row groups and the predictions as a 3-row-group file, forbid
    whole-file reads of either, and score from the file `batch_rows` rows at a time."""
    dedup = Path("datasets") / dataset / "dedup.parquet"
    write_parquet(pq.read_table(dedup), dedup, row_group_size=3)
    path = write_parquet(table, Path("datasets") / dataset / "predictions" / f"{spec.name}.parquet", row_group_size=3)
    whole = pq.read_table

    def guarded(source, *args, **kwargs):
        if "dedup" in str(source) or "predictions" in str(source):
            raise AssertionError(f"{source} read whole")
        return whole(source, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", guarded)
    result = scoring.score_model(dataset, spec, path, cases.params(), {"x": 1}, batch_rows=batch_rows)
    monkeypatch.setattr(pq, "read_table", whole)
    return result, outputs(dataset, spec.name)


def test_zero_shot_streamed_equals_whole_table(frames_ds, monkeypatch):
    table = cases.predictions(frames_ds, lambda f: 0.1 if cases.CLUSTER[f["material_id"]] == 0 else 0.3)
    table = table.set_column(4, "forces", pa.array([None if i == 3 else f for i, f in enumerate(table.column("forces").to_pylist())], pa.list_(pa.float64())))
    whole = scoring.score_model("tiny", cases.spec(), table, cases.params(), {"x": 1})
    before = outputs("tiny", "zs")
    result, after = streamed(monkeypatch, "tiny", table, cases.spec())
    assert after == before  # JSON, parity CSV and PNG byte for byte
    assert result["coverage"]["n_predictions"] == len(frames_ds)
    assert result["plots"]["forces"]["n_points"] == 6 * (len(frames_ds) - 1)  # the frame without forces
    assert whole["strategies"]["loco"]["folds"]["1"]["test"]["energy_mae_meV_per_atom"] == pytest.approx(300.0)


def test_fold_trained_streamed_equals_whole_table(frames_ds, monkeypatch):
    def val_test(roles, fold):
        return [f for f in frames_ds if roles[fold][f["material_id"]] in ("val", "test")]

    table = pa.concat_tables(
        [
            cases.predictions(frames_ds, lambda f: 0.1, "random", 0, rows=val_test(cases.random_roles(), 0)),
            cases.predictions(frames_ds, lambda f: 0.2, "loco", 1, rows=val_test(cases.loco_roles(), 1)),
            cases.predictions(frames_ds, lambda f: 0.3, "loco", 0, rows=val_test(cases.loco_roles(), 0)),
        ]
    )
    spec = cases.spec("trained", kind="mace-trained")
    scoring.score_model("tiny", spec, table, cases.params(), {"x": 1})
    before = outputs("tiny", "trained")
    result, after = streamed(monkeypatch, "tiny", table, spec)
    assert after == before
    assert set(result["strategies"]["loco"]["folds"]) == {"0", "1"}


@pytest.mark.skipif(not cases.REFS.exists(), reason="shared MP reference entries not available")
def test_mp2020_formation_energies_streamed_equal_whole_table(mp_ds, monkeypatch):
    from xtalbench.evaluate.thermo import load_reference_energies

    refs = load_reference_energies(cases.REFS)
    rows = []
    for i, f in enumerate(mp_ds):
        mu = sum(n * refs[el] for el, n in zip(*_composition(f), strict=True))
        rows.append({"frame_id": f["frame_id"], "material_id": f["material_id"], "nsites": f["nsites"],
                     "energy": (f["formation_energy_per_atom"] + 0.01 * i) * f["nsites"] + mu})  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=cases.PRED_SCHEMA)
    spec = cases.spec("m", kind="mace-file")
    whole = scoring.score_model("mp", spec, table, cases.params(), {"x": 1})
    before = outputs("mp", "m")
    result, after = streamed(monkeypatch, "mp", table, spec, batch_rows=1)
    assert after == before
    assert result["coverage"]["e_form"] == whole["coverage"]["e_form"] and whole["coverage"]["e_form"]["n_computed"] > 0


def _composition(frame: dict) -> tuple[list[str], list[int]]:
    from collections import Counter

    from ase.data import chemical_symbols

    counts = Counter(chemical_symbols[z] for z in frame["numbers"])
    return list(counts), list(counts.values())


def test_prediction_order_does_not_change_the_metrics(frames_ds, monkeypatch):
    """Rows are looked up in dedup.parquet by frame_id, row group by row group: any order works,
    and metrics sum in split-file order, so only the parity point order may differ."""
    table = cases.predictions(frames_ds, lambda f: 0.01 * len(f["frame_id"]))
    forward = scoring.score_model("tiny", cases.spec(), table, cases.params(), {})
    result, _ = streamed(monkeypatch, "tiny", table.take(pa.array(range(table.num_rows - 1, -1, -1))), cases.spec())
    for key in ("strategies", "gap", "coverage", "contamination", "notes"):
        assert json.dumps(result[key], sort_keys=True) == json.dumps(forward[key], sort_keys=True)


def test_duplicate_in_a_later_batch_names_the_record(frames_ds, monkeypatch):
    table = cases.predictions(frames_ds)
    doubled = pa.concat_tables([table, table.slice(5, 1)])
    with pytest.raises(ValueError, match=r"record 'mp-3:1', field 'frame_id': predicted twice"):
        streamed(monkeypatch, "tiny", doubled, cases.spec())
