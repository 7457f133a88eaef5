"""Run a model over a dataset and write its predictions (docs/CONTRACTS.md).

Zero-shot models predict every frame of `dedup.parquet` once; per-fold metrics come from
joining these predictions with the split files. Fold-trained models (`mace-trained`) predict
each fold's val+test rows with that fold's checkpoint. Rows with elements a model does not
cover are not predicted: they are written to `<model>.skipped.parquet` with the reason, and
counted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xtalbench.models import ModelSpec, Predictor, load_model, unsupported_elements

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
CHUNK_ROWS = 2048  # rows handed to the predictor at once (it batches inside)


@dataclass
class Timer:
    """Pure inference time and volume (model loading excluded)."""

    seconds: float = 0.0
    structures: int = 0
    atoms: int = 0

    def record(self, seconds: float, rows: Sequence[Mapping[str, Any]]) -> None:
        self.seconds += seconds
        self.structures += len(rows)
        self.atoms += sum(int(r["nsites"]) for r in rows)


@dataclass
class Evaluation:
    predictions: pa.Table
    skipped: pa.Table
    throughput: dict[str, Any] = field(default_factory=dict)


def _predict_rows(
    predictor: Predictor, rows: list[dict[str, Any]], batch_size: int | None, strategy: str | None, fold: int | None, timer: Timer
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Predict supported rows; return (prediction rows, skipped rows)."""
    out, skipped, todo = [], [], []
    for row in rows:
        missing = unsupported_elements(row, predictor.supported_numbers)
        if missing:
            skipped.append(
                {"frame_id": row["frame_id"], "strategy": strategy, "fold": fold, "field": "numbers",
                 "reason": f"element(s) {', '.join(missing)} not supported by model {predictor.name!r}"}
            )  # fmt: skip
        else:
            todo.append(row)
    for start in range(0, len(todo), CHUNK_ROWS):
        chunk = todo[start : start + CHUNK_ROWS]
        t0 = time.perf_counter()
        result = predictor.predict(chunk, batch_size=batch_size)
        timer.record(time.perf_counter() - t0, chunk)
        stress = result.get("stress")
        for i, row in enumerate(chunk):
            s = None if stress is None else np.asarray(stress[i], dtype=np.float64)
            forces = result.get("forces")
            out.append(
                {
                    "frame_id": row["frame_id"],
                    "material_id": row["material_id"],
                    "nsites": int(row["nsites"]),
                    "energy": float(result["energy"][i]),
                    "forces": None if forces is None else np.asarray(forces[i], dtype=np.float64).ravel().tolist(),
                    "stress": None if s is None or not np.isfinite(s).all() else s.tolist(),
                    "strategy": strategy,
                    "fold": fold,
                }
            )
    return out, skipped


def fold_frame_ids(split: pa.Table, fold: int, roles: Iterable[str] = ("val", "test")) -> pa.Array:
    sel = split.filter(pc.and_(pc.equal(split["fold"], fold), pc.is_in(split["role"], value_set=pa.array(list(roles)))))
    return sel["frame_id"]


def evaluate(
    dataset: str,
    spec: ModelSpec,
    frames: pa.Table,
    splits: Mapping[str, pa.Table] | None = None,
    folds: Sequence[Mapping[str, Any]] = (),
    device: str = "cpu",
    dtype: str | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    predictor: Predictor | None = None,
) -> Evaluation:
    """Predictions of one model on one dataset (plus skipped rows and throughput)."""
    from tqdm import tqdm

    from xtalbench.device import hardware_record

    spec = spec.resolve(dataset)
    dtype = dtype or spec.defaults.get("dtype") or "float64"
    batch_size = batch_size or spec.defaults.get("batch_size")
    frames = frames.select(INPUT_COLUMNS)
    timer = Timer()
    preds: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    n_input = 0
    last: Predictor | None = None
    if not spec.per_fold:
        predictor = predictor or load_model(spec, device=device, dtype=dtype, progress=progress)
        rows = frames.sort_by("frame_id").to_pylist()
        n_input = len(rows)
        preds, skipped = _predict_rows(predictor, rows, batch_size, None, None, timer)
    else:
        if not folds:
            raise ValueError(f"model {spec.name!r} is fold-trained: give the folds it was trained on (params train.folds)")
        for entry in tqdm(folds, desc=f"{spec.name} folds", disable=not progress):
            strategy, fold = str(entry["strategy"]), int(entry["fold"])
            if splits is None or strategy not in splits:
                raise SystemExit(f"split {strategy!r} of dataset {dataset!r} is missing: run the split stage first")
            ids = fold_frame_ids(splits[strategy], fold)
            rows = frames.filter(pc.is_in(frames["frame_id"], value_set=ids)).sort_by("frame_id").to_pylist()
            n_input += len(rows)
            fold_predictor = last = predictor or load_model(
                spec, device=device, dtype=dtype, checkpoint=spec.checkpoint_for(dataset, strategy, fold), progress=progress
            )
            p, s = _predict_rows(fold_predictor, rows, batch_size, strategy, fold, timer)
            preds += p
            skipped += s
    if len(preds) + len(skipped) != n_input:
        raise AssertionError(f"{spec.name}: {n_input} rows in, {len(preds)} predicted + {len(skipped)} skipped")
    used = predictor or last
    default_batch = getattr(used, "default_batch_size", None)
    throughput = {
        **hardware_record(device, getattr(used, "dtype", dtype)),
        "batch_size": batch_size or (default_batch() if callable(default_batch) else None),
        "seconds": round(timer.seconds, 3),
        "structures": timer.structures,
        "atoms": timer.atoms,
        "structures_per_s": round(timer.structures / timer.seconds, 2) if timer.seconds > 0 else None,
        "atoms_per_s": round(timer.atoms / timer.seconds, 1) if timer.seconds > 0 else None,
        "rows_in": n_input,
        "rows_predicted": len(preds),
        "rows_skipped": len(skipped),
    }
    return Evaluation(
        predictions=pa.Table.from_pylist(preds, schema=PREDICTIONS_SCHEMA),
        skipped=pa.Table.from_pylist(skipped, schema=SKIPPED_SCHEMA),
        throughput=throughput,
    )
