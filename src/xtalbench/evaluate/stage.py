"""Run a model over a dataset and write its predictions (docs/CONTRACTS.md), in bounded memory.

Zero-shot models predict every frame of `dedup.parquet` once; per-fold metrics come from
joining these predictions with the split files. Fold-trained models (`mace-trained`) predict
each fold's val+test rows with that fold's checkpoint. Rows with elements a model does not
cover are not predicted: they go to `<model>.skipped.parquet` with the reason, and are counted
(rows in = predicted + skipped, checked).

Streaming, three passes, none of which holds more than a few chunks:

1. *select*: stream the frames (structure columns only); keep the fold's val+test rows
   (fold-trained models; the fold's frame ids are one in-memory set), write rows with
   unsupported elements to the skipped file and the rest to a temporary "todo" file.
2. *predict*: `parallel.map_row_groups` maps `predict_chunk` over the todo file, in-process or
   on Dask (params `compute:`). Each worker process loads the predictor once (`cached_predictor`).
3. *collect*: stream the chunk results into the predictions file (fixed row groups) and sum
   the per-chunk inference times into the throughput record.

Outputs are byte-identical whatever the executor and `chunk_rows` (on CPU): rows keep input
order, row groups are fixed, and the predictor computes the same batches the same way however
the input was chunked. That last point needs care with MACE, whose energies and forces change
in the last bit with the batch a structure was computed in, and with the TorchScript
optimisations a process has warmed up (see `reproducible_inference`). So `chunk_rows` is rounded
up to a multiple of the batch size B and the todo file holds only rows that are predicted:
batch k is always todo rows [k·B, (k+1)·B), as in a one-process run over the whole table.
(CUDA scatter-adds are not deterministic: on a GPU, expect last-bit differences between runs.)
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xtalbench.core.errors import XtalbenchError
from xtalbench.core.io import open_parquet
from xtalbench.models import ModelSpec, Predictor, load_model

PREDICTIONS_SCHEMA = pa.schema(
    [
        pa.field("frame_id", pa.string(), nullable=False),
        pa.field("material_id", pa.string(), nullable=False),
        pa.field("nsites", pa.int32(), nullable=False),
        pa.field("energy", pa.float64()),
        pa.field("forces", pa.list_(pa.float64())),
        pa.field("stress", pa.list_(pa.float64())),
        pa.field("strategy", pa.string()),
        pa.field("fold", pa.int32()),
    ]
)
SKIPPED_SCHEMA = pa.schema(
    [
        pa.field("frame_id", pa.string(), nullable=False),
        pa.field("strategy", pa.string()),
        pa.field("fold", pa.int32()),
        pa.field("field", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]
)
INPUT_COLUMNS = ["frame_id", "material_id", "nsites", "numbers", "positions", "lattice", "pbc"]
SECONDS = "_inference_seconds"  # per-chunk inference time, on the chunk's first result row
CHUNK_SCHEMA = PREDICTIONS_SCHEMA.append(pa.field(SECONDS, pa.float64()))
SELECT_ROWS = 10_000  # rows per batch of the select and collect passes
CACHED_PREDICTORS = 2  # predictors kept per process (fold-trained models: one per fold)


# --- the per-chunk work (runs in a worker process) -----------------------------------------------

_PREDICTORS: OrderedDict[tuple, Predictor] = OrderedDict()


def cached_predictor(spec: ModelSpec, checkpoint: str | None, device: str, dtype: str) -> Predictor:
    """The predictor for (spec, checkpoint, device, dtype), loaded once per process (LRU of 2)."""
    key = (json.dumps(spec.as_dict(), sort_keys=True, default=str), checkpoint, device, dtype)
    if key in _PREDICTORS:
        _PREDICTORS.move_to_end(key)
        return _PREDICTORS[key]
    predictor = load_model(spec, device=device, dtype=dtype, checkpoint=checkpoint, progress=False)
    _PREDICTORS[key] = predictor
    while len(_PREDICTORS) > CACHED_PREDICTORS:
        _PREDICTORS.popitem(last=False)
    return predictor


@contextlib.contextmanager
def reproducible_inference(threads: int | None = None) -> Iterator[None]:
    """Same inputs, same bits, in every process. Two things change torch results in the last bit:
    TorchScript's profiling executor (e3nn modules in MACE) swaps in an optimised graph after the
    first calls, so a run would depend on which chunk a worker saw first (unoptimised execution
    is deterministic on CPU and, measured here, not slower); and the intra-op thread count
    (CHGNet float32 differs between 1 and 2 threads; Dask workers start with 1), so every
    process predicts with the same `threads`."""
    import sys

    torch = sys.modules.get("torch")  # a model that did not import torch runs no torch code
    if torch is None:
        yield
        return
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(int(threads))
    with torch.jit.optimized_execution(False):
        yield


def _list_column(values: Sequence[np.ndarray | None], width: int | None = None) -> pa.ListArray:
    """float64 list column from per-row arrays (None → null), built from one flat buffer."""
    lengths = np.array([0 if v is None else np.size(v) for v in values], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    present = [np.asarray(v, dtype=np.float64).ravel() for v in values if v is not None]
    flat = np.concatenate(present) if present else np.zeros(0)
    mask = pa.array([v is None for v in values], pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, pa.float64()), mask=mask)


def predict_chunk(
    table: pa.Table,
    spec: ModelSpec,
    checkpoint: str | None,
    device: str,
    dtype: str,
    batch_size: int | None,
    strategy: str | None = None,
    fold: int | None = None,
    predictor: Predictor | None = None,
    threads: int | None = None,
) -> pa.Table:
    """Frames chunk (every row supported by the model) → predictions chunk (`CHUNK_SCHEMA`).

    Top-level and picklable (a `functools.partial` of it travels to Dask workers). `predictor`
    overrides loading (in-process runs and tests only).
    """
    n = table.num_rows
    model = predictor or cached_predictor(spec, checkpoint, device, dtype)
    t0 = time.perf_counter()
    with reproducible_inference(threads):
        result = model.predict(table, batch_size=batch_size) if n else {"energy": np.zeros(0), "forces": None, "stress": None}
    seconds = time.perf_counter() - t0
    energy = np.asarray(result["energy"], dtype=np.float64)
    if energy.shape != (n,):
        raise ValueError(f"model {spec.name!r} returned {energy.shape} energies for {n} frames")
    forces = result.get("forces")
    stress = result.get("stress")
    stress_rows: list[np.ndarray | None] = [None] * n
    if stress is not None:
        s = np.asarray(stress, dtype=np.float64).reshape(n, 6)
        finite = np.isfinite(s).all(axis=1)
        stress_rows = [s[i] if finite[i] else None for i in range(n)]
    return pa.table(
        {
            "frame_id": table["frame_id"],
            "material_id": table["material_id"],
            "nsites": table["nsites"].cast(pa.int32()),
            "energy": pa.array(energy, pa.float64()),
            "forces": _list_column([None] * n if forces is None else list(forces)),
            "stress": _list_column(stress_rows),
            "strategy": pa.array([strategy] * n, pa.string()),
            "fold": pa.array([fold] * n, pa.int32()),
            SECONDS: pa.array([seconds] + [0.0] * (n - 1) if n else [], pa.float64()),
        },
        schema=CHUNK_SCHEMA,
    )


# --- select pass ----------------------------------------------------------------------------------


def _chunks(source: str | Path | pa.Table, rows: int = SELECT_ROWS) -> Iterator[pa.Table]:
    from xtalbench.core.parallel import iter_chunks

    yield from iter_chunks(source, rows, columns=INPUT_COLUMNS)


def unsupported_mask(numbers: pa.ChunkedArray | pa.ListArray, supported: frozenset[int] | None) -> np.ndarray:
    """Rows holding at least one element outside `supported` (vectorised over a list column)."""
    numbers = numbers.combine_chunks() if isinstance(numbers, pa.ChunkedArray) else numbers
    n = len(numbers)
    if supported is None or n == 0:
        return np.zeros(n, dtype=bool)
    values = pc.list_flatten(numbers).to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(numbers).to_numpy(zero_copy_only=False)
    bad = ~np.isin(values, np.fromiter(supported, dtype=np.int64))
    mask = np.zeros(n, dtype=bool)
    mask[parents[bad]] = True
    return mask


def skip_reason(numbers: Sequence[int], supported: frozenset[int], model: str) -> str:
    from xtalbench.core.schema import element_symbol

    missing = [element_symbol(z) for z in sorted({int(z) for z in numbers} - supported)]
    return f"element(s) {', '.join(missing)} not supported by model {model!r}"


@dataclass
class Selection:
    rows_in: int = 0  # rows of this model/fold (all frames, or the fold's val+test rows)
    todo: int = 0
    skipped: int = 0
    atoms: int = 0  # atoms in the todo rows


def select_rows(
    source: str | Path | pa.Table,
    todo_path: Path,
    skipped_writer: Any,
    supported: frozenset[int] | None,
    model: str,
    frame_ids: pa.Array | None = None,
    strategy: str | None = None,
    fold: int | None = None,
) -> Selection:
    """Pass 1: rows to predict → `todo_path`; rows with unsupported elements → `skipped_writer`."""
    from xtalbench.core.parallel import RowGroupWriter

    sel = Selection()
    full = _input_schema(source)
    schema = pa.schema([full.field(name) for name in INPUT_COLUMNS])
    with RowGroupWriter(todo_path, schema) as todo:
        for chunk in _chunks(source):
            if frame_ids is not None:
                chunk = chunk.filter(pc.is_in(chunk["frame_id"], value_set=frame_ids))
            sel.rows_in += chunk.num_rows
            bad = unsupported_mask(chunk["numbers"], supported)
            if bad.any():
                skipped = chunk.filter(pa.array(bad))
                reasons = [skip_reason(z, supported, model) for z in skipped["numbers"].to_pylist()]  # type: ignore[arg-type]
                k = skipped.num_rows
                skipped_writer.write(
                    pa.table(
                        {"frame_id": skipped["frame_id"], "strategy": pa.array([strategy] * k, pa.string()),
                         "fold": pa.array([fold] * k, pa.int32()), "field": pa.array(["numbers"] * k), "reason": pa.array(reasons)},
                        schema=SKIPPED_SCHEMA,
                    )  # fmt: skip
                )
                sel.skipped += k
                chunk = chunk.filter(pa.array(~bad))
            todo.write(chunk)
            sel.todo += chunk.num_rows
            sel.atoms += int(pc.sum(chunk["nsites"]).as_py() or 0)
    return sel


def _input_schema(source: str | Path | pa.Table) -> pa.Schema:
    if isinstance(source, pa.Table):
        schema, name = source.schema, "frames table"
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: run the stage that writes it first (dvc repro)")
        schema, name = open_parquet(path).schema_arrow, str(path)  # InputError names an unreadable file
    missing = [c for c in INPUT_COLUMNS if c not in schema.names]
    if missing:
        raise ValueError(f"{name}: field {missing[0]!r} missing (evaluate needs {', '.join(INPUT_COLUMNS)})")
    return schema


def fold_frame_ids(split: str | Path | pa.Table, fold: int, roles: Sequence[str] = ("val", "test")) -> pa.Array:
    """Frame ids of one fold's `roles` rows, streamed from a split file (or filtered from a table)."""
    from xtalbench.core.parallel import iter_chunks

    role_set = pa.array(list(roles))
    parts = []
    for chunk in iter_chunks(split, 100_000, columns=["frame_id", "fold", "role"]):
        keep = pc.and_(pc.equal(chunk["fold"], fold), pc.is_in(chunk["role"], value_set=role_set))
        parts.append(chunk.filter(keep)["frame_id"].combine_chunks())
    return pa.concat_arrays(parts) if parts else pa.array([], pa.string())


# --- the stage ------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    predictions: Path
    skipped: Path
    throughput: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Run:
    """Predictions of one model (or one fold of a fold-trained model)."""

    strategy: str | None
    fold: int | None
    checkpoint: str | None
    frame_ids: pa.Array | None = None


def aligned_chunk_rows(chunk_rows: int, batch_size: int) -> int:
    """`chunk_rows` rounded up to a multiple of the batch size (chunk-independent batches)."""
    return max(1, math.ceil(chunk_rows / batch_size)) * batch_size


def evaluate(
    dataset: str,
    spec: ModelSpec,
    frames: str | Path | pa.Table,
    output: str | Path,
    skipped_output: str | Path | None = None,
    splits: Mapping[str, str | Path | pa.Table] | None = None,
    folds: Sequence[Mapping[str, Any]] = (),
    device: str = "cpu",
    dtype: str | None = None,
    batch_size: int | None = None,
    compute: Mapping[str, Any] | None = None,
    progress: bool = True,
    predictor: Predictor | None = None,
    threads: int | None = None,
) -> Evaluation:
    """Predictions of one model on one dataset → `output` (+ skipped rows), and throughput.

    frames: a frames Parquet file (streamed) or table. splits: strategy → split file or table
    (fold-trained models). compute: `parallel.compute_options(params)` (default: in-process).
    threads: torch intra-op threads in every process that predicts (default: this process's
    count), so that Dask workers compute exactly what a single-process run does.
    """
    import torch

    from xtalbench.core.device import hardware_record
    from xtalbench.core.parallel import (
        RowGroupWriter,
        compute_options,
        iter_chunks,
        map_row_groups,
    )

    spec = spec.resolve(dataset)
    threads = int(threads or torch.get_num_threads())
    dtype = dtype or spec.defaults.get("dtype") or "float64"
    batch_size = batch_size or spec.defaults.get("batch_size")
    options = dict(compute) if compute is not None else compute_options({})
    output = Path(output)
    skipped_output = Path(skipped_output) if skipped_output is not None else output.with_name(f"{output.stem}.skipped.parquet")
    runs = _runs(dataset, spec, splits, folds, progress)

    structures = atoms = n_input = n_skipped = n_predicted = chunks = 0
    seconds = wall = 0.0
    effective_batch = chunk_rows = None
    used_dtype = dtype
    output.parent.mkdir(parents=True, exist_ok=True)
    # on an exception the writers drop their temporaries: previous outputs are untouched
    with (
        _shared_client(options) as options,
        tempfile.TemporaryDirectory(prefix=f".{output.stem}-", dir=output.parent) as tmp,
        RowGroupWriter(output, PREDICTIONS_SCHEMA) as out,
        RowGroupWriter(skipped_output, SKIPPED_SCHEMA) as skipped,
    ):
        for run in runs:
            # the predictor of this run, in this process: supported elements, default batch size
            # (and the one that predicts, with the local executor, through the same cache)
            model = predictor or cached_predictor(spec, run.checkpoint, device, dtype)
            used_dtype = getattr(model, "dtype", dtype)
            default_batch = getattr(model, "default_batch_size", None)
            effective_batch = int(batch_size or (default_batch() if callable(default_batch) else 1))
            chunk_rows = aligned_chunk_rows(int(options.get("chunk_rows", 2000)), effective_batch)
            todo = Path(tmp) / "todo.parquet"
            sel = select_rows(frames, todo, skipped, model.supported_numbers, model.name, run.frame_ids, run.strategy, run.fold)
            fn = partial(predict_chunk, spec=spec, checkpoint=run.checkpoint, device=device, dtype=dtype,
                         batch_size=effective_batch, strategy=run.strategy, fold=run.fold,
                         predictor=predictor, threads=threads)  # fmt: skip
            raw = Path(tmp) / "chunks.parquet"
            label = spec.name if run.strategy is None else f"{spec.name} {run.strategy}-{run.fold}"
            result = map_row_groups(todo, fn, raw, CHUNK_SCHEMA, progress=progress, desc=label, **{**options, "chunk_rows": chunk_rows})
            if result.rows_out != sel.todo:
                raise AssertionError(f"{label}: {sel.todo} rows sent to the model, {result.rows_out} predictions came back")
            for batch in iter_chunks(raw, SELECT_ROWS):
                seconds += float(pc.sum(batch[SECONDS]).as_py() or 0.0)
                out.write(batch.drop_columns([SECONDS]))
            n_input += sel.rows_in
            n_skipped += sel.skipped
            n_predicted += result.rows_out
            structures += sel.todo
            atoms += sel.atoms
            chunks += result.chunks
            wall += result.seconds
            raw.unlink()
            todo.unlink()
    if n_predicted + n_skipped != n_input:
        raise AssertionError(f"{spec.name}: {n_input} rows in, {n_predicted} predicted + {n_skipped} skipped")
    throughput = {
        **hardware_record(device, used_dtype),
        "batch_size": effective_batch,
        "threads": threads,
        "seconds": round(seconds, 3),
        "structures": structures,
        "atoms": atoms,
        "structures_per_s": round(structures / seconds, 2) if seconds > 0 else None,
        "atoms_per_s": round(atoms / seconds, 1) if seconds > 0 else None,
        "rows_in": n_input,
        "rows_predicted": n_predicted,
        "rows_skipped": n_skipped,
        "executor": str(options.get("executor", "local")),
        "chunk_rows": chunk_rows,
        "chunks": chunks,
        "wall_seconds": round(wall, 3),
    }
    return Evaluation(predictions=output, skipped=skipped_output, throughput=throughput)


@contextlib.contextmanager
def _shared_client(options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """With `executor: dask` and no client given, one client (and cluster) for every run."""
    if options.get("executor") != "dask" or options.get("client") is not None:
        yield options
        return
    from xtalbench.core.parallel import dask_client

    with dask_client(options.get("scheduler_address"), int(options.get("n_workers") or 2)) as client:
        yield {**options, "client": client}


def _absolute(checkpoint: str | None) -> str | None:
    """An existing checkpoint file as an absolute path (workers started elsewhere find it too);
    anything else (a model name such as CHGNet's `0.3.0`, a missing file) unchanged."""
    if checkpoint is None or not Path(checkpoint).is_file():
        return checkpoint
    return str(Path(checkpoint).resolve())


def _runs(dataset: str, spec: ModelSpec, splits: Mapping[str, Any] | None, folds: Sequence[Mapping[str, Any]], progress: bool) -> list[_Run]:
    if not spec.per_fold:
        return [_Run(None, None, _absolute(spec.checkpoint))]
    if not folds:
        raise ValueError(f"model {spec.name!r} is fold-trained: give the folds it was trained on (params train.folds)")
    runs = []
    for entry in folds:
        strategy, fold = str(entry["strategy"]), int(entry["fold"])
        if splits is None or strategy not in splits:
            raise XtalbenchError(f"split {strategy!r} of dataset {dataset!r} is missing: run the split stage first")
        checkpoint = _absolute(str(spec.checkpoint_for(dataset, strategy, fold)))
        runs.append(_Run(strategy, fold, checkpoint, fold_frame_ids(splits[strategy], fold)))
    return runs
