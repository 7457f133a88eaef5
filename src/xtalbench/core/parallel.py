"""Map a function over Parquet row-group chunks, in-process or on a Dask cluster.

The heavy stages (featurize, evaluate) call `map_row_groups`: it streams the input in chunks
of `chunk_rows`, applies `fn(pa.Table) -> pa.Table` to each chunk, and writes the results in
input order to one Parquet file. Only a few chunks are in flight at once, so memory stays
bounded whatever the size of the input, and the output is byte-identical whichever executor
ran it (and whatever `chunk_rows` was): results are re-batched into fixed row groups of
`project.ROW_GROUP_SIZE` rows and written exactly like `project.write_parquet` writes a table.

Executors (params.yaml `compute:` block, read with `compute_options(params)`):

- ``local``: a plain loop in this process (the default; no Dask import).
- ``dask``: `dask.distributed`. With `scheduler_address: null` a `LocalCluster` of
  `n_workers` processes with one thread each is started and closed around the run; with an
  address (``tcp://host:8786``) the run uses that existing cluster. The workers must be able
  to import xtalbench (same environment) — the chunks themselves are sent over the wire, so
  workers do not need to see the input file.

`fn` must be picklable (a top-level function, or `functools.partial` of one with picklable
arguments such as a fitted estimator), must depend only on the rows of its chunk, and must
be deterministic.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from xtalbench.core.errors import XtalbenchError
from xtalbench.core.io import TempParquetWriter, open_parquet
from xtalbench.core.project import ROW_GROUP_SIZE, iter_batches

EXECUTORS = ("local", "dask")
DEFAULT_COMPUTE: dict[str, Any] = {
    "executor": "local",
    "scheduler_address": None,
    "n_workers": 2,
    "chunk_rows": 2000,
    "window": None,
}

ChunkFn = Callable[[pa.Table], pa.Table]


@dataclass(frozen=True)
class MapResult:
    """What one `map_row_groups` run did (goes into a stage's metrics JSON)."""

    rows_in: int
    rows_out: int
    chunks: int
    seconds: float
    executor: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ChunkError(XtalbenchError, RuntimeError):
    """`fn` failed on one chunk; names the chunk and its input row range."""


def compute_options(params: Mapping[str, Any] | None, file: str = "params.yaml") -> dict[str, Any]:
    """The `compute:` block of params (defaults filled in, validated by
    `xtalbench.core.params.ComputeParams`) as keyword arguments for `map_row_groups`:
    executor, scheduler_address, n_workers, chunk_rows, window."""
    from xtalbench.core.errors import ParamsError
    from xtalbench.core.params import ComputeParams, parse_section

    block = (params or {}).get("compute") or {}
    unknown = set(block) - set(DEFAULT_COMPUTE) if isinstance(block, Mapping) else set()
    if unknown:
        raise ParamsError(f"{file}: params `compute`: unknown key(s) {sorted(unknown)} (known: {sorted(DEFAULT_COMPUTE)})")
    return parse_section(ComputeParams, params or {}, "compute", file).model_dump()


def iter_chunks(source: str | Path | pa.Table, chunk_rows: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """Chunks of at most `chunk_rows` rows of a Parquet file (streamed) or of a table."""
    if isinstance(source, pa.Table):
        table = source if columns is None else source.select(columns)
        for start in range(0, table.num_rows, chunk_rows):
            yield table.slice(start, chunk_rows)
        return
    path = Path(source)
    for batch in iter_batches(path, columns=columns, batch_size=chunk_rows):
        yield pa.Table.from_batches([batch])


def _num_rows(source: str | Path | pa.Table) -> int:
    if isinstance(source, pa.Table):
        return source.num_rows
    return open_parquet(source).metadata.num_rows


class RowGroupWriter(TempParquetWriter):
    """Write tables to Parquet re-batched into row groups of exactly `row_group_size` rows.

    The bytes depend only on the concatenated rows, not on how they arrived, and match
    `project.write_parquet` of the whole table. Rows go to a temporary sibling renamed onto
    `path` by `close()`; leaving the `with` block on an exception (or `abort()`) removes it, so
    `path` never holds a partial table and a failed run leaves the previous file untouched.
    """

    def __init__(self, path: str | Path, schema: pa.Schema, row_group_size: int = ROW_GROUP_SIZE):
        super().__init__(path, schema.remove_metadata())
        self.row_group_size = row_group_size
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= self.row_group_size:
            merged = pa.concat_tables(self._pending)
            full = (merged.num_rows // self.row_group_size) * self.row_group_size
            for start in range(0, full, self.row_group_size):
                self._write_group(merged.slice(start, self.row_group_size))
            rest = merged.slice(full)
            self._pending, self._pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

    def _write_group(self, table: pa.Table) -> None:
        self._writer.write_table(table.combine_chunks(), row_group_size=self.row_group_size)
        self.rows += table.num_rows

    def _flush(self) -> None:
        if self._pending_rows:
            self._write_group(pa.concat_tables(self._pending))
            self._pending, self._pending_rows = [], 0


def _conform(table: pa.Table, schema: pa.Schema, index: int, start: int) -> pa.Table:
    """A chunk result in the output schema's column order and types, or a clear error."""
    if not isinstance(table, pa.Table):
        raise ChunkError(f"chunk {index} (input rows {start}..): fn returned {type(table).__name__}, expected pyarrow.Table")
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise ChunkError(f"chunk {index} (input rows {start}..): fn result lacks column(s) {missing}")
    try:
        return table.select(schema.names).cast(schema.remove_metadata())
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
        raise ChunkError(f"chunk {index} (input rows {start}..): fn result does not fit the output schema: {error}") from error


def _run_chunk(fn: ChunkFn, table: pa.Table) -> pa.Table:
    """Apply fn; strip schema metadata so results do not depend on the reader."""
    return fn(table).replace_schema_metadata(None)


@functools.lru_cache(maxsize=4)
def _load_fn(payload: bytes) -> ChunkFn:
    import cloudpickle

    return cloudpickle.loads(payload)


def _run_pickled_chunk(payload: bytes, table: pa.Table) -> pa.Table:
    """Executed on a Dask worker. `fn` travels cloudpickled (once per worker, then cached), so
    modules registered with `cloudpickle.register_pickle_by_value` (notebooks, test files)
    work too: distributed itself would try plain pickle, i.e. import by name, first."""
    return _run_chunk(_load_fn(payload), table)


@contextlib.contextmanager
def dask_client(scheduler_address: str | None = None, n_workers: int = 2, **cluster_kwargs: Any) -> Iterator[Any]:
    """A `distributed.Client`: to `scheduler_address` if given, else on a fresh `LocalCluster`
    of `n_workers` single-threaded processes (closed on exit)."""
    from distributed import Client, LocalCluster

    if scheduler_address:
        client = Client(scheduler_address)
        try:
            yield client
        finally:
            client.close()
        return
    options = {"n_workers": n_workers, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0"}
    options.update(cluster_kwargs)
    with LocalCluster(**options) as cluster, Client(cluster) as client:
        yield client


def map_row_groups(
    source: str | Path | pa.Table,
    fn: ChunkFn,
    output_path: str | Path,
    output_schema: pa.Schema,
    *,
    executor: str = "local",
    scheduler_address: str | None = None,
    n_workers: int = 2,
    chunk_rows: int = 2000,
    window: int | None = None,
    columns: list[str] | None = None,
    client: Any = None,
    row_group_size: int = ROW_GROUP_SIZE,
    progress: bool = True,
    desc: str | None = None,
) -> MapResult:
    """Apply `fn` to every chunk of `source` and write the results, in input order, to
    `output_path` (Parquet, `output_schema`).

    source: a Parquet path (streamed by `chunk_rows`) or an in-memory table (sliced).
    fn: `pa.Table -> pa.Table`, picklable, row-local and deterministic; it may return fewer or
        more rows than it got. Its result is cast to `output_schema` (columns selected by name).
    executor: "local" (in this process) or "dask" (see the module docstring); `client`, an
        existing `distributed.Client`, overrides `scheduler_address`/`n_workers`.
    window: chunks in flight at once with Dask (default 2 × n_workers): the memory bound.
    columns: read only these input columns.

    Typical call from a stage, with the `compute:` block of params.yaml::

        map_row_groups(paths.dedup, partial(featurize_chunk, featurizer=fitted),
                       paths.features, FEATURES_SCHEMA, desc="featurize", **compute_options(params))

    Returns a `MapResult` (rows in/out, chunks, seconds). A failing chunk raises `ChunkError`
    naming the chunk and its first input row; no partial output is left (the file written so
    far was a temporary; a previous `output_path` is left as it was).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    from tqdm.auto import tqdm

    output_path = Path(output_path)
    total = _num_rows(source)
    started = time.perf_counter()
    chunks = iter_chunks(source, chunk_rows, columns)
    rows_in = chunks_done = 0
    bar = tqdm(total=total, unit="rows", desc=desc or output_path.name, disable=not progress, mininterval=1.0)
    try:
        with RowGroupWriter(output_path, output_schema, row_group_size) as writer:
            if executor == "local":
                results = _map_local(fn, chunks)
            elif client is not None:
                results = _map_dask(client, fn, chunks, window or 2 * n_workers)
            else:
                results = _map_dask_owned(fn, chunks, scheduler_address, n_workers, window)
            for index, start, n, result in results:
                writer.write(_conform(result, output_schema, index, start))
                rows_in += n
                chunks_done += 1
                bar.update(n)
    finally:  # on failure the writer drops its temporary file; a previous output stays intact
        bar.close()
    return MapResult(rows_in, writer.rows, chunks_done, round(time.perf_counter() - started, 3), executor)


def _map_local(fn: ChunkFn, chunks: Iterator[pa.Table]) -> Iterator[tuple[int, int, int, pa.Table]]:
    start = 0
    for index, chunk in enumerate(chunks):
        try:
            result = _run_chunk(fn, chunk)
        except Exception as error:
            raise ChunkError(f"chunk {index} (input rows {start}-{start + chunk.num_rows - 1}): {error}") from error
        yield index, start, chunk.num_rows, result
        start += chunk.num_rows


def _map_dask_owned(fn, chunks, scheduler_address, n_workers, window):
    with dask_client(scheduler_address, n_workers) as client:
        workers = len(client.scheduler_info().get("workers", {})) or n_workers
        yield from _map_dask(client, fn, chunks, window or 2 * workers)


def _map_dask(client: Any, fn: ChunkFn, chunks: Iterator[pa.Table], window: int) -> Iterator[tuple[int, int, int, pa.Table]]:
    """Submit with a sliding window, gather strictly in input order."""
    import cloudpickle

    run = uuid.uuid4().hex[:12]
    payload = client.scatter(cloudpickle.dumps(fn), broadcast=True, hash=False)
    in_flight: deque[tuple[int, int, int, Any]] = deque()
    start = 0
    counter = itertools.count()
    chunks = iter(chunks)
    exhausted = False
    try:
        while True:
            while not exhausted and len(in_flight) < max(1, window):
                chunk = next(chunks, None)
                if chunk is None:
                    exhausted = True
                    break
                index = next(counter)
                future = client.submit(_run_pickled_chunk, payload, chunk, key=f"xtalbench-chunk-{run}-{index}", pure=False)
                in_flight.append((index, start, chunk.num_rows, future))
                start += chunk.num_rows
            if not in_flight:
                return
            index, first, n, future = in_flight.popleft()
            try:
                result = future.result()
            except Exception as error:
                raise ChunkError(f"chunk {index} (input rows {first}-{first + n - 1}): {error}") from error
            future.release()
            yield index, first, n, result
    finally:
        for *_, future in in_flight:
            future.cancel()
        payload.release()
