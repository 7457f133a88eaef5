"""Streaming input and output of the dedup stage: frames in row-group batches, outputs in row groups.

The stage reads its input several times (materials, descriptors of judged frames, outputs) and
never holds the whole frames table: `FrameSource` yields `(first row, batch)` pairs from a
Parquet file (or, for tests and library use, slices of an in-memory table); `TableSink` is the
in-memory counterpart of `xtalbench.core.parallel.RowGroupWriter`, which writes exact row groups.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from xtalbench.core.errors import MissingInputError
from xtalbench.core.io import open_parquet
from xtalbench.core.project import ROW_GROUP_SIZE, iter_batches

BATCH_ROWS = ROW_GROUP_SIZE  # rows read at a time; peak memory ~ one batch of full frames


class FrameSource:
    """A frames table read in batches: a Parquet path (streamed) or a `pyarrow.Table`."""

    def __init__(self, source: str | Path | pa.Table, batch_rows: int = BATCH_ROWS):
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        self.batch_rows = batch_rows
        if isinstance(source, pa.Table):
            self.table: pa.Table | None = source
            self.path: Path | None = None
            self.schema = source.schema.remove_metadata()
            self.num_rows = source.num_rows
        else:
            self.table, self.path = None, Path(source)
            if not self.path.exists():
                raise MissingInputError(f"{self.path} does not exist: run the stage that writes it first (dvc repro)")
            meta = open_parquet(self.path)  # a truncated or corrupted file: InputError naming it
            self.schema = meta.schema_arrow.remove_metadata()
            self.num_rows = meta.metadata.num_rows

    def batches(self, columns: list[str] | None = None) -> Iterator[tuple[int, pa.Table]]:
        """(index of the batch's first row in the input, batch) in input order."""
        start = 0
        if self.table is not None:
            table = self.table if columns is None else self.table.select(columns)
            chunks = (table.slice(s, self.batch_rows) for s in range(0, table.num_rows, self.batch_rows))
        else:
            chunks = (pa.Table.from_batches([b]) for b in iter_batches(self.path, columns, self.batch_rows))
        for chunk in chunks:
            yield start, chunk
            start += chunk.num_rows

    def n_batches(self) -> int:
        return -(-self.num_rows // self.batch_rows)


class TableSink:
    """Collects written tables in memory (same interface as `parallel.RowGroupWriter`)."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema.remove_metadata()
        self.rows = 0
        self._parts: list[pa.Table] = []

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._parts.append(table)
            self.rows += table.num_rows

    def close(self) -> None:
        pass

    def result(self) -> pa.Table:
        if not self._parts:
            return self.schema.empty_table()
        return pa.concat_tables(self._parts).combine_chunks()


def file_sink(path: str | Path, schema: pa.Schema):
    """A writer of exact `ROW_GROUP_SIZE` row groups: bytes equal `project.write_parquet` of all rows."""
    from xtalbench.core.parallel import RowGroupWriter

    return RowGroupWriter(path, schema, ROW_GROUP_SIZE)
