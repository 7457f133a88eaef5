"""featurize stage: fixed SOAP species layout, streaming output, quarantine, determinism."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from ase.build import bulk

from xtalbench.core.project import write_parquet
from xtalbench.core.schema import Rejected, frames_table, make_frame
from xtalbench.descriptors.soap import SoapFeaturizer
from xtalbench.featurize.stage import featurize_file

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SMALL = {"soap": {"n_max": 3, "l_max": 2, "r_cut": 4.0}}


def mp20_frames(n: int) -> list[dict]:
    from xtalbench.fetch.sources.shared import read_mp20

    rows = (r for r in read_mp20(DATA / "mp20-subset" / "mp20_subset.parquet") if not isinstance(r, Rejected))
    return list(itertools.islice(rows, n))


@pytest.fixture(scope="module")
def frames_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("feat") / "frames.parquet"
    write_parquet(frames_table(mp20_frames(40)), path)
    return path


def test_layout_is_fixed_by_fit_not_by_structure():
    nacl, cu = bulk("NaCl", "rocksalt", a=5.64), bulk("Cu", "fcc", a=3.6)
    a = SoapFeaturizer(n_max=3, l_max=2).fit([nacl, cu])
    b = SoapFeaturizer(n_max=3, l_max=2).fit([cu, nacl])
    assert a.species_ == b.species_ == ["Na", "Cl", "Cu"]  # sorted by atomic number
    # the same structure gets the same vector whatever else is in the batch
    np.testing.assert_array_equal(a.transform([nacl])[0], b.transform([cu, nacl])[1])
    x = a.transform([nacl, cu])
    assert x.dtype == np.float32 and x.shape == (2, a.n_features_out_)
    # Cu has no Na/Cl neighbours: only the Cu block (one third of mu1nu1 columns) is non-zero
    block = a.n_features_out_ // 3
    assert np.all(x[1, : 2 * block] == 0) and np.any(x[1, 2 * block :] != 0)
    assert np.all(x[0, 2 * block :] == 0)


def test_unknown_species_names_the_record():
    soap = SoapFeaturizer(species=["Na", "Cl"], n_max=3, l_max=2).fit()
    cu = bulk("Cu", "fcc", a=3.6)
    cu.info["frame_id"] = "frame-cu"
    with pytest.raises(ValueError, match="frame-cu.*Cu"):
        soap.transform([cu])


def test_featurize_file_streams_and_keeps_order(frames_path, tmp_path):
    out, quarantine = tmp_path / "features.parquet", tmp_path / "q.parquet"
    summary = featurize_file(frames_path, out, {**SMALL, "composition": "elmd_mod_petti"}, quarantine, compute={"chunk_rows": 16}, progress=False)
    table = pq.read_table(out)
    source_ids = pq.read_table(frames_path, columns=["frame_id"]).column(0).to_pylist()
    assert table.column("frame_id").to_pylist() == source_ids
    assert summary["rows_read"] == summary["rows_written"] == 40 and summary["quarantined"] == 0
    width = summary["soap"]["n_features"]
    assert table.schema.field("soap").type.list_size == width
    assert str(table.schema.field("soap").type.value_type) == "float"
    # the layout covers exactly the elements of the data
    elements = {e for row in pq.read_table(frames_path, columns=["elements"]).column(0).to_pylist() for e in row}
    assert set(summary["soap"]["species"]) == elements
    from xtalbench.descriptors.composition import CompositionFeaturizer

    comp = CompositionFeaturizer("elmd_mod_petti").fit()
    assert table.schema.field("composition").type.list_size == comp.n_features_out_
    formula = pq.read_table(frames_path, columns=["formula"]).column(0)[3].as_py()
    np.testing.assert_allclose(table.column("composition")[3].values.to_numpy(), comp.transform([formula])[0], atol=1e-6)


def test_bad_row_is_quarantined_with_reason(frames_path, tmp_path):
    rows = pq.read_table(frames_path).slice(0, 5).to_pylist()
    bad = make_frame(frame_id="broken", material_id="broken", source="test", lattice=[0.0] * 9, numbers=[14, 14],
                     positions=[0, 0, 0, 1.4, 1.4, 1.4])
    path = tmp_path / "frames.parquet"
    write_parquet(frames_table(rows[:2] + [bad] + rows[2:]), path)
    out, quarantine = tmp_path / "features.parquet", tmp_path / "q.parquet"
    summary = featurize_file(path, out, SMALL, quarantine, progress=False)
    assert summary["rows_read"] == 6 and summary["rows_written"] == 5 and summary["quarantined"] == 1
    q = pq.read_table(quarantine).to_pylist()
    assert q[0]["record"] == "broken" and q[0]["reason"]
    assert "broken" not in pq.read_table(out, columns=["frame_id"]).column(0).to_pylist()


def test_output_is_byte_identical_whatever_the_chunking(frames_path, tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    featurize_file(frames_path, a, SMALL, tmp_path / "qa.parquet", compute={"chunk_rows": 7}, progress=False)
    featurize_file(frames_path, b, SMALL, tmp_path / "qb.parquet", compute={"chunk_rows": 64}, progress=False)
    assert a.read_bytes() == b.read_bytes()


def test_row_groups_are_bounded_in_bytes_not_rows(frames_path, tmp_path, monkeypatch):
    from xtalbench.featurize.stage import output_schema, row_group_rows

    assert row_group_rows(output_schema(39_872, None)) == 420  # MPtrj's 89 species at n_max 8, l_max 6: 64 MiB groups
    assert row_group_rows(output_schema(10, None)) == 10_000  # narrow features: the usual row count
    whole = tmp_path / "whole.parquet"
    featurize_file(frames_path, whole, SMALL, tmp_path / "q1.parquet", progress=False)
    width = pq.read_schema(whole).field("soap").type.list_size
    monkeypatch.setattr("xtalbench.featurize.stage.ROW_GROUP_BYTES", 6 * width * 4)
    bounded = tmp_path / "bounded.parquet"
    featurize_file(frames_path, bounded, SMALL, tmp_path / "q2.parquet", compute={"chunk_rows": 16}, progress=False)
    meta = pq.ParquetFile(bounded).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [6] * 6 + [4]
    assert pq.read_table(bounded).equals(pq.read_table(whole))
