"""Where every artifact lives, how params are read, and how outputs are written.

Stages run from the repository root (DVC's working directory); all paths are relative to it.
Writers are deterministic: same table ⇒ byte-identical file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from xtalbench.core.io import TempParquetWriter, atomic_path, iter_parquet, read_parquet

PARAMS_FILE = "params.yaml"
ROW_GROUP_SIZE = 10_000


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    with open(path) as handle:
        return yaml.safe_load(handle) or {}


@dataclass(frozen=True)
class Paths:
    """The artifact layout of one dataset (see design.md, 'Layout')."""

    dataset: str
    root: Path = Path(".")

    @property
    def data_dir(self) -> Path:
        return self.root / "datasets" / self.dataset

    @property
    def frames(self) -> Path:
        return self.data_dir / "frames.parquet"

    @property
    def quarantine(self) -> Path:
        return self.data_dir / "quarantine.parquet"

    @property
    def data_version(self) -> Path:
        return self.data_dir / "DATA_VERSION.json"

    @property
    def dedup(self) -> Path:
        return self.data_dir / "dedup.parquet"

    @property
    def dedup_clusters(self) -> Path:
        return self.data_dir / "dedup_clusters.parquet"

    @property
    def features(self) -> Path:
        return self.data_dir / "features.parquet"

    def predictions(self, model: str) -> Path:
        return self.data_dir / "predictions" / f"{model}.parquet"

    @property
    def splits_dir(self) -> Path:
        return self.root / "splits" / self.dataset

    def split(self, strategy: str) -> Path:
        return self.splits_dir / f"{strategy}.parquet"

    @property
    def metrics_dir(self) -> Path:
        return self.root / "metrics" / self.dataset

    def metrics(self, name: str) -> Path:
        return self.metrics_dir / f"{name}.json"

    @property
    def plots_dir(self) -> Path:
        return self.root / "plots" / self.dataset

    @property
    def models_dir(self) -> Path:
        return self.root / "models" / "trained" / self.dataset


def write_parquet(table: pa.Table, path: str | Path, row_group_size: int = ROW_GROUP_SIZE) -> Path:
    """Write a table deterministically (no pandas index metadata, fixed row groups, zstd)."""
    path = Path(path)
    table = table.replace_schema_metadata(None)
    with atomic_path(path) as temp:  # a reader never sees a half-written file under `path`
        pq.write_table(table, temp, row_group_size=row_group_size, compression="zstd")
    return path


class ParquetSink(TempParquetWriter):
    """Append record batches to one Parquet file in bounded memory; deterministic output.

    Rows go to a temporary sibling, renamed onto `path` by `close()`; leaving the `with` block
    on an exception (or `abort()`) removes it, so `path` is never a partial table."""

    def __init__(self, path: str | Path, schema: pa.Schema, row_group_size: int = ROW_GROUP_SIZE):
        super().__init__(path, schema)
        self.row_group_size = row_group_size
        self._buffer: list[dict[str, Any]] = []

    def append(self, row: dict[str, Any]) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= self.row_group_size:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=self.schema))
            self.rows += len(self._buffer)
            self._buffer = []


def iter_batches(path: str | Path, columns: list[str] | None = None, batch_size: int = ROW_GROUP_SIZE) -> Iterator[pa.RecordBatch]:
    """Stream a Parquet file in record batches (bounded memory).

    `pre_buffer=False`: with pyarrow's default the reader keeps every row group's buffers until
    the loop ends, so memory grows with the file (390 MB → 590 MB peak on 300k frames).
    An unreadable file (missing, truncated, corrupted) raises `InputError` naming it.
    """
    yield from iter_parquet(path, columns=columns, batch_size=batch_size)


def read_table(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """A whole Parquet table; `InputError` naming the file when it is missing or unreadable."""
    return read_parquet(path, columns=columns)


def write_json(data: Any, path: str | Path) -> Path:
    """Write JSON with sorted keys; NaN/inf become null so DVC and browsers can read it."""
    path = Path(path)
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(_finite(data), indent=2, sort_keys=True) + "\n")
    return path


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return _finite(value.item())
    return value
