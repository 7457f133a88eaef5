"""map_row_groups: in-process vs a 2-worker Dask LocalCluster on real MP-20 structures."""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path

import cloudpickle
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xtalbench.core import schema
from xtalbench.core.parallel import (
    ChunkError,
    RowGroupWriter,
    compute_options,
    map_row_groups,
)
from xtalbench.core.project import write_parquet

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MP20 = DATA / "mp20-subset" / "mp20_subset.parquet"
N_STRUCTURES = 120

# Workers import functions by module name; this test module is imported by path
# (--import-mode=importlib), so ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

GEOMETRY_SCHEMA = pa.schema(
    [
        pa.field("frame_id", pa.string()),
        pa.field("volume_per_atom", pa.float64()),
        pa.field("min_distance", pa.float64()),
        pa.field("neighbours_3A", pa.int32()),
    ]
)


def geometry_chunk(table: pa.Table) -> pa.Table:
    """A real per-structure computation: volume per atom, shortest bond, neighbours within 3 Å."""
    from ase.neighborlist import neighbor_list

    out = {name: [] for name in GEOMETRY_SCHEMA.names}
    for row in table.to_pylist():
        atoms = schema.to_atoms(row, with_labels=False)
        i, d = neighbor_list("id", atoms, 3.0)
        out["frame_id"].append(row["frame_id"])
        out["volume_per_atom"].append(atoms.get_volume() / len(atoms))
        out["min_distance"].append(float(d.min()) if len(d) else None)
        out["neighbours_3A"].append(len(i))
    return pa.table(out, schema=GEOMETRY_SCHEMA)


def soap_chunk(table: pa.Table, featurizer) -> pa.Table:
    atoms = [schema.to_atoms(row, with_labels=False) for row in table.to_pylist()]
    values = featurizer.transform(atoms)
    width = values.shape[1]
    flat = pa.array(values.ravel(), type=pa.float32())
    return pa.table({"frame_id": table["frame_id"], "soap": pa.FixedSizeListArray.from_arrays(flat, width)})


def drop_odd_rows(table: pa.Table) -> pa.Table:
    """Returns fewer rows than it gets: ordering must still follow the input."""
    keep = np.arange(table.num_rows) % 2 == 0
    return geometry_chunk(table.filter(pa.array(keep)))


def fail_on_mp_1(table: pa.Table) -> pa.Table:
    if "bad-frame" in table["frame_id"].to_pylist():
        raise ValueError("record 'bad-frame', field 'positions': broken")
    return geometry_chunk(table)


@pytest.fixture(scope="module")
def frames_path(tmp_path_factory) -> Path:
    """Frames built from the first MP-20 CIFs (real structures), written as a Parquet file."""
    from pymatgen.core import Structure

    source = pq.read_table(MP20, columns=["material_id", "cif"]).slice(0, N_STRUCTURES).to_pylist()
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for record in source:
            structure = Structure.from_str(record["cif"], fmt="cif")
            rows.append(schema.from_structure(structure, frame_id=record["material_id"], material_id=record["material_id"], source="shared"))
    path = tmp_path_factory.mktemp("frames") / "frames.parquet"
    write_parquet(schema.frames_table(rows), path, row_group_size=50)
    return path


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as dask_client:
            yield dask_client


def test_local_output_equals_whole_table_reference(frames_path, tmp_path):
    """Chunked output is byte-identical to applying fn to the whole table, for any chunk size."""
    reference = write_parquet(geometry_chunk(pq.read_table(frames_path)), tmp_path / "ref.parquet")
    sizes = {}
    for chunk_rows in (7, 64, 1000):
        out = tmp_path / f"local_{chunk_rows}.parquet"
        result = map_row_groups(frames_path, geometry_chunk, out, GEOMETRY_SCHEMA, chunk_rows=chunk_rows, progress=False)
        assert result.rows_in == result.rows_out == N_STRUCTURES
        assert result.chunks == -(-N_STRUCTURES // chunk_rows)
        sizes[chunk_rows] = out.read_bytes()
    assert sizes[7] == sizes[64] == sizes[1000] == reference.read_bytes()
    table = pq.read_table(reference)
    assert table["frame_id"].to_pylist() == pq.read_table(frames_path, columns=["frame_id"])["frame_id"].to_pylist()
    assert all(v > 1.0 for v in table["volume_per_atom"].to_pylist())


def test_dask_output_byte_identical_to_local(frames_path, tmp_path, client):
    local = tmp_path / "local.parquet"
    remote = tmp_path / "dask.parquet"
    map_row_groups(frames_path, geometry_chunk, local, GEOMETRY_SCHEMA, chunk_rows=16, progress=False)
    result = map_row_groups(frames_path, geometry_chunk, remote, GEOMETRY_SCHEMA, executor="dask", client=client, chunk_rows=16, window=3, progress=False)
    assert result.executor == "dask" and result.chunks == 8 and result.rows_out == N_STRUCTURES
    assert remote.read_bytes() == local.read_bytes()
    # both workers took part (chunks really went to other processes)
    assert len(client.scheduler_info()["workers"]) == 2


def test_dask_row_dropping_fn_keeps_input_order(frames_path, tmp_path, client):
    local = tmp_path / "local.parquet"
    remote = tmp_path / "dask.parquet"
    map_row_groups(frames_path, drop_odd_rows, local, GEOMETRY_SCHEMA, chunk_rows=9, progress=False)
    result = map_row_groups(frames_path, drop_odd_rows, remote, GEOMETRY_SCHEMA, executor="dask", client=client, chunk_rows=9, progress=False)
    assert remote.read_bytes() == local.read_bytes()
    ids = pq.read_table(remote)["frame_id"].to_pylist()
    all_ids = pq.read_table(frames_path, columns=["frame_id"])["frame_id"].to_pylist()
    expected = [fid for k in range(0, len(all_ids), 9) for fid in all_ids[k : k + 9 : 2]]
    assert ids == expected and result.rows_out == len(expected) < result.rows_in


def test_dask_soap_features_identical_to_local(frames_path, tmp_path, client):
    soap = pytest.importorskip("xtalbench.descriptors.soap")
    table = pq.read_table(frames_path).slice(0, 60)
    atoms = [schema.to_atoms(row, with_labels=False) for row in table.to_pylist()]
    featurizer = soap.SoapFeaturizer(n_max=4, l_max=3, r_cut=4.0).fit(atoms)
    width = featurizer.n_features_out_
    out_schema = pa.schema([pa.field("frame_id", pa.string()), pa.field("soap", pa.list_(pa.float32(), width))])
    fn = functools.partial(soap_chunk, featurizer=featurizer)
    local, remote = tmp_path / "local.parquet", tmp_path / "dask.parquet"
    map_row_groups(table, fn, local, out_schema, chunk_rows=8, progress=False)
    map_row_groups(table, fn, remote, out_schema, executor="dask", client=client, chunk_rows=8, progress=False)
    assert remote.read_bytes() == local.read_bytes()
    values = np.asarray(pq.read_table(remote)["soap"].to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(values, featurizer.transform(atoms))


def test_dask_failure_names_chunk_and_record(frames_path, tmp_path, client):
    table = pq.read_table(frames_path).slice(0, 30)
    ids = table["frame_id"].to_pylist()
    ids[17] = "bad-frame"
    table = table.set_column(0, "frame_id", pa.array(ids))
    out = tmp_path / "out.parquet"
    for executor in ("local", "dask"):
        with pytest.raises(ChunkError, match=r"chunk 1 \(input rows 10-19\).*'bad-frame'.*'positions'"):
            map_row_groups(table, fail_on_mp_1, out, GEOMETRY_SCHEMA, executor=executor, client=client, chunk_rows=10, progress=False)
        assert not out.exists()


def test_owned_local_cluster_from_params(frames_path, tmp_path):
    """executor: dask with no address starts (and closes) its own LocalCluster."""
    table = pq.read_table(frames_path).slice(0, 20)
    local, remote = tmp_path / "local.parquet", tmp_path / "dask.parquet"
    map_row_groups(table, geometry_chunk, local, GEOMETRY_SCHEMA, chunk_rows=5, progress=False)
    options = compute_options({"compute": {"executor": "dask", "n_workers": 1, "chunk_rows": 5}})
    result = map_row_groups(table, geometry_chunk, remote, GEOMETRY_SCHEMA, progress=False, **options)
    assert result.executor == "dask" and result.chunks == 4
    assert remote.read_bytes() == local.read_bytes()


def worker_chunk(table: pa.Table) -> pa.Table:
    """Which Dask worker ran each row."""
    from distributed import get_worker

    return pa.table({"frame_id": table["frame_id"], "worker": pa.array([get_worker().address] * table.num_rows)})


def test_existing_cluster_from_scheduler_address(frames_path, tmp_path, client):
    """executor: dask with `scheduler_address` runs on that cluster (the fixture's, reached by address only)."""
    table = pq.read_table(frames_path).slice(0, 30)
    local, remote = tmp_path / "local.parquet", tmp_path / "remote.parquet"
    map_row_groups(table, geometry_chunk, local, GEOMETRY_SCHEMA, chunk_rows=7, progress=False)
    options = compute_options({"compute": {"executor": "dask", "scheduler_address": client.scheduler.address, "chunk_rows": 7}})
    result = map_row_groups(table, geometry_chunk, remote, GEOMETRY_SCHEMA, progress=False, **options)
    assert result.executor == "dask" and result.chunks == 5
    assert remote.read_bytes() == local.read_bytes()
    where = tmp_path / "workers.parquet"
    map_row_groups(table, worker_chunk, where, pa.schema([("frame_id", pa.string()), ("worker", pa.string())]), progress=False, **options)
    used = set(pq.read_table(where).column("worker").to_pylist())
    assert used and used <= set(client.scheduler_info()["workers"])  # its workers did the work
    assert len(client.scheduler_info()["workers"]) == 2  # and the cluster is left running


def test_schema_mismatch_is_a_clear_error(frames_path, tmp_path):
    wrong = pa.schema([pa.field("frame_id", pa.string()), pa.field("not_there", pa.float64())])
    with pytest.raises(ChunkError, match=r"chunk 0 .*lacks column\(s\) \['not_there'\]"):
        map_row_groups(frames_path, geometry_chunk, tmp_path / "x.parquet", wrong, progress=False)


def test_compute_options_validation():
    assert compute_options({})["executor"] == "local"
    assert compute_options({"compute": {"executor": "dask", "scheduler_address": "tcp://h:8786"}})["scheduler_address"] == "tcp://h:8786"
    with pytest.raises(ValueError, match="compute.executor"):
        compute_options({"compute": {"executor": "spark"}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['workers'\]"):
        compute_options({"compute": {"workers": 3}})
    with pytest.raises(ValueError, match="compute.chunk_rows"):
        compute_options({"compute": {"chunk_rows": 0}})


def test_row_group_writer_rebatches(tmp_path):
    s = pa.schema([pa.field("x", pa.int64())])
    path = tmp_path / "x.parquet"
    with RowGroupWriter(path, s, row_group_size=10) as writer:
        for n in (3, 9, 0, 14, 1):
            writer.write(pa.table({"x": pa.array(range(n), pa.int64())}))
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [10, 10, 7]
    assert pq.read_table(path)["x"].to_pylist() == list(range(3)) + list(range(9)) + list(range(14)) + [0]
