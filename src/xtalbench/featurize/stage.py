"""The featurize stage: frames → per-structure SOAP (+ composition) vectors, in bounded memory.

A first pass reads only `numbers` to fix the species layout (so column j means the same
species pair in every row); then `parallel.map_row_groups` streams chunks of rows through
`featurize_chunk` (in-process or on Dask, per params `compute:`) into one Parquet file with
fixed row groups, so the bytes do not depend on chunking or executor. Rows that cannot be
featurized are not dropped silently: they go to a quarantine file with the reason, and the
counts (read = written + quarantined) go to the stage metrics.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xtalbench.core.errors import XtalbenchError
from xtalbench.core.project import ROW_GROUP_SIZE, iter_batches
from xtalbench.core.schema import QUARANTINE_SCHEMA, Rejected, element_symbol, to_atoms
from xtalbench.descriptors.soap import SoapFeaturizer

INPUT_COLUMNS = ["frame_id", "material_id", "numbers", "positions", "lattice", "pbc"]
SOAP_KEYS = ("r_cut", "n_max", "l_max", "sigma", "compression", "average", "dtype", "n_jobs", "chunk_size")
UNAVAILABLE = "xtalbench.descriptors.composition is not available"
ROW_GROUP_BYTES = 64 * 2**20  # target uncompressed size of one output row group


def row_group_rows(schema: pa.Schema) -> int:
    """Rows per output row group: at most ROW_GROUP_BYTES of feature values. A fixed row count
    would not bound memory: 10,000 rows of 89-species SOAP (n_max 8, l_max 6) are 1.6 GB, and
    the writer and every reader hold a whole row group."""
    width = sum(f.type.list_size * f.type.value_type.bit_width // 8 for f in schema if pa.types.is_fixed_size_list(f.type))
    return max(1, min(ROW_GROUP_SIZE, ROW_GROUP_BYTES // max(1, width)))


def dataset_species(path: str | Path) -> list[str]:
    """All elements in a frames Parquet file, sorted by atomic number (reads `numbers` only)."""
    found: set[int] = set()
    for batch in iter_batches(path, columns=["numbers"]):
        values = batch.column(0).values.to_numpy(zero_copy_only=False)
        found.update(int(z) for z in np.unique(values))
    return [element_symbol(z) for z in sorted(found)]


def make_soap(params: Mapping[str, Any], species: list[str]) -> SoapFeaturizer:
    soap = dict(params.get("soap") or {})
    unknown = set(soap) - set(SOAP_KEYS)
    if unknown:
        raise XtalbenchError(f"params featurize.soap: unknown keys {sorted(unknown)} (allowed: {', '.join(SOAP_KEYS)})")
    return SoapFeaturizer(species=species, **soap).fit()


def make_composition(params: Mapping[str, Any]) -> Any | None:
    """The dedup stage's composition featurizer, or None when it is off or not available."""
    kind = params.get("composition")
    if not kind:
        return None
    try:
        module = importlib.import_module("xtalbench.descriptors.composition")
    except ImportError:
        return None
    featurizer = module.CompositionFeaturizer(kind=kind)
    if hasattr(featurizer, "fit"):
        featurizer = featurizer.fit([]) or featurizer
    return featurizer


def composition_matrix(composition: Any, rows: list[Mapping[str, Any]]) -> np.ndarray:
    """Composition vectors of frame rows, from the exact atom counts in `numbers`."""
    counts = [dict(Counter(int(z) for z in row["numbers"])) for row in rows]
    records = [str(row.get("frame_id")) for row in rows]
    return np.asarray(composition.transform(counts, records=records, field="numbers"), dtype=np.float32)


def composition_width(composition: Any) -> int:
    width = getattr(composition, "n_features_out_", None)
    if width is None:
        width = composition_matrix(composition, [{"frame_id": "probe", "numbers": [1]}]).shape[1]
    return int(width)


def output_schema(n_soap: int, n_composition: int | None) -> pa.Schema:
    fields = [
        pa.field("frame_id", pa.string(), nullable=False),
        pa.field("material_id", pa.string(), nullable=False),
        pa.field("soap", pa.list_(pa.float32(), n_soap), nullable=False),
    ]
    if n_composition is not None:
        fields.append(pa.field("composition", pa.list_(pa.float32(), n_composition), nullable=False))
    return pa.schema(fields)


def _fixed_list(matrix: np.ndarray, width: int) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).ravel(), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, width)


def _featurize_rows(rows: list[dict[str, Any]], soap: SoapFeaturizer, composition: Any | None) -> tuple[list[dict], np.ndarray, np.ndarray | None]:
    atoms = [to_atoms(row, with_labels=False) for row in rows]
    matrix = soap.transform(atoms)
    comp = None if composition is None else composition_matrix(composition, rows)
    return rows, matrix, comp


def featurize_chunk(table: pa.Table, soap: SoapFeaturizer, composition: Any | None = None) -> pa.Table:
    """Frames chunk → features chunk. A chunk that fails is retried row by row; rows that still
    fail are left out (the stage finds and quarantines them with `diagnose_row`)."""
    rows = table.select(INPUT_COLUMNS).to_pylist()
    try:
        kept, matrix, comp = _featurize_rows(rows, soap, composition)
    except Exception:  # noqa: BLE001 - narrowed row by row below
        parts = []
        for row in rows:
            try:
                parts.append(_featurize_rows([row], soap, composition))
            except Exception:  # noqa: BLE001 - the row is quarantined by the stage
                continue
        kept = [p[0][0] for p in parts]
        width = soap.n_features_out_
        matrix = np.concatenate([p[1] for p in parts]) if parts else np.empty((0, width), np.float32)
        comp = None
        if composition is not None:
            comp = np.concatenate([p[2] for p in parts]) if parts else np.empty((0, composition_width(composition)), np.float32)
    columns = {
        "frame_id": pa.array([r["frame_id"] for r in kept], pa.string()),
        "material_id": pa.array([r["material_id"] for r in kept], pa.string()),
        "soap": _fixed_list(matrix, soap.n_features_out_),
    }
    if comp is not None:
        columns["composition"] = _fixed_list(comp, comp.shape[1] if comp.ndim == 2 and comp.shape[0] else composition_width(composition))
    return pa.table(columns)


def diagnose_row(row: Mapping[str, Any], soap: SoapFeaturizer, composition: Any | None) -> Rejected:
    """Why one row could not be featurized (re-runs it alone)."""
    record = str(row.get("frame_id"))
    try:
        atoms = to_atoms(row, with_labels=False)
    except Exception as error:  # noqa: BLE001
        return Rejected(record, "positions", f"cannot build a structure: {type(error).__name__}: {error}")
    try:
        soap.transform([atoms])
    except Exception as error:  # noqa: BLE001
        return Rejected(record, "soap", f"{type(error).__name__}: {error}")
    try:
        if composition is not None:
            composition_matrix(composition, [dict(row)])
    except Exception as error:  # noqa: BLE001
        return Rejected(record, "composition", f"{type(error).__name__}: {error}")
    return Rejected(record, "soap", "featurization failed inside its chunk but not alone")


def featurize_file(
    source: str | Path,
    target: str | Path,
    params: Mapping[str, Any],
    quarantine: str | Path,
    compute: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the stage on one frames file; returns the metrics dict (counts + layout)."""
    from xtalbench.core.parallel import map_row_groups

    species = dataset_species(source)
    if not species:
        raise XtalbenchError(f"{source}: no structures to featurize")
    soap = make_soap(params, species)
    kind = params.get("composition")
    composition = make_composition(params)
    schema = output_schema(soap.n_features_out_, None if composition is None else composition_width(composition))
    columns = INPUT_COLUMNS
    options = dict(compute or {})
    options.setdefault("chunk_rows", int(params.get("chunk_rows", 512)))
    result = map_row_groups(
        source, partial(featurize_chunk, soap=soap, composition=composition), target, schema,
        columns=columns, progress=progress, desc="featurize", row_group_size=row_group_rows(schema), **options,
    )
    # a second pass over the input only when some rows did not come back
    rejected = [] if result.rows_out == result.rows_in else _find_rejected(source, target, columns, soap, composition)
    pq.write_table(
        pa.Table.from_pylist([r.as_row() for r in rejected], schema=QUARANTINE_SCHEMA), quarantine, compression="zstd"
    )
    if result.rows_out + len(rejected) != result.rows_in:
        raise RuntimeError(f"featurize: {result.rows_in} rows read but {result.rows_out} written + {len(rejected)} quarantined")
    comp_info: dict[str, Any] | None = None
    if kind:
        comp_info = {"kind": kind, "n_features": schema.field("composition").type.list_size} if composition is not None else {"kind": kind, "status": UNAVAILABLE}
    return {
        "rows_read": result.rows_in,
        "rows_written": result.rows_out,
        "quarantined": len(rejected),
        "seconds": result.seconds,
        "structures_per_second": round(result.rows_in / result.seconds, 1) if result.seconds else None,
        "executor": result.executor,
        "soap": soap.layout(),
        "composition": comp_info,
    }


def _find_rejected(source, target, columns, soap, composition) -> list[Rejected]:
    written = set(pq.read_table(target, columns=["frame_id"]).column(0).to_pylist())
    rejected: list[Rejected] = []
    for batch in iter_batches(source, columns=columns):
        ids = batch.column("frame_id").to_pylist()
        missing = [i for i, fid in enumerate(ids) if fid not in written]
        for i in missing:
            rejected.append(diagnose_row(batch.slice(i, 1).to_pylist()[0], soap, composition))
    return rejected
