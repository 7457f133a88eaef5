"""Contamination methods chosen from the model spec's declared training set."""

from __future__ import annotations

from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xtalbench.evaluate.contamination import (
    contamination,
    is_mp_database,
    read_ids_file,
)

FOLDS = {
    ("loco", 0): ({"mp-1", "mp-2", "mvc-3"}, {"mp-4", "mp-5"}),
    ("loco", 1): ({"mp-4", "mp-5"}, {"mp-1", "mp-2", "mvc-3"}),
}


def spec(kind="mace-file", **ts):
    return SimpleNamespace(name="m", kind=kind, training_set=ts)


def test_database_version_is_an_upper_bound_on_mp_ids():
    got = contamination(spec(name="MPtrj", database="Materials Project", version="2021.2.8"), FOLDS)
    assert got["method"] == "database-version" and got["upper_bound"]
    assert got["fraction"] == pytest.approx(4 / 5)  # mvc-3 is not an mp- id
    assert got["strategies"]["loco"]["folds"]["0"]["fraction"] == pytest.approx(2 / 3)


def test_unknown_database_gives_null_fraction():
    got = contamination(spec(name="OMat24", database="Alexandria/OMat24"), FOLDS)
    assert got["method"] == "unknown" and got["fraction"] is None
    assert got["strategies"]["loco"]["folds"]["1"]["n_test_materials"] == 2


def test_ids_from_parquet(tmp_path):
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"material_id": ["mp-2", "mp-5", "mp-77"]}), path)
    assert read_ids_file(path) == {"mp-2", "mp-5", "mp-77"}
    got = contamination(spec(name="x", database="custom", ids_file=str(path)), FOLDS)
    assert got["method"] == "ids" and got["fraction"] == pytest.approx(2 / 5)
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["mp-2"]}), bad)
    with pytest.raises(ValueError, match="material_id"):
        read_ids_file(bad)


def test_fold_overlap_for_trained_models():
    clean = contamination(spec(kind="mace-trained", name="xtalbench", database="xtalbench:mp20"), FOLDS)
    assert clean["method"] == "fold-overlap" and clean["fraction"] == 0.0
    leaky = dict(FOLDS)
    leaky[("loco", 1)] = ({"mp-4", "mp-5"}, {"mp-5", "mp-1"})
    got = contamination(spec(kind="mace-trained", name="xtalbench", database="xtalbench:mp20"), leaky)
    assert got["strategies"]["loco"]["folds"]["1"]["fraction"] == pytest.approx(0.5)
    assert got["fraction"] == pytest.approx(1 / 5)


def test_mp_database_names():
    assert is_mp_database("Materials Project") and is_mp_database("MPtrj") and is_mp_database(None, "MPF.2021.2.8")
    assert not is_mp_database("Alexandria") and not is_mp_database("xtalbench:mp20")
