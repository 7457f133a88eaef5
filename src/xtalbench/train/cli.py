"""`xtalbench train <dataset>`: small MACE models on the train role of chosen split folds.

Writes models/trained/<dataset>/<strategy>-<fold>.model (+ .log) and metrics/<dataset>/train.json.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from xtalbench.core.project import (
    Paths,
    dataset_params,
    load_params,
    read_table,
    write_json,
    write_parquet,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a key of params.yaml `datasets`")
    parser.add_argument("--frames", default=None, help="frames Parquet (default: datasets/<name>/dedup.parquet)")


def run(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    dataset_params(params, args.dataset)
    summary = train_dataset(args.dataset, params.get("train") or {}, Paths(args.dataset), frames_path=args.frames)
    print(json.dumps(summary["totals"], indent=2))
    return 0


def train_dataset(dataset: str, train_params: dict[str, Any], paths: Paths, frames_path: str | None = None, models_dir: str = "models") -> dict[str, Any]:
    """Train every configured fold of one dataset; returns (and writes) the training metrics."""
    import pyarrow as pa

    from xtalbench.core.device import resolve_device
    from xtalbench.evaluate.stage import SKIPPED_SCHEMA
    from xtalbench.models import load_spec
    from xtalbench.train.stage import fold_rows, prepare_fold, train_fold

    spec = load_spec(train_params.get("model", "mace-tiny"), models_dir).resolve(dataset)
    if spec.kind != "mace-trained":
        raise SystemExit(f"train.model {spec.name!r} has kind {spec.kind!r}; expected mace-trained")
    device = resolve_device(train_params.get("device", "auto"))
    seed = int(train_params.get("seed", 0))
    frames = read_table(frames_path or paths.dedup)
    folds = train_params.get("folds") or []
    if not folds:
        raise SystemExit("params.yaml train.folds is empty: nothing to train")
    records: dict[str, Any] = {}
    skipped_rows: list[dict[str, Any]] = []
    for entry in folds:
        strategy, fold = str(entry["strategy"]), int(entry["fold"])
        split = read_table(paths.split(strategy))
        data = prepare_fold(
            fold_rows(frames, split, strategy, fold),
            spec.energy_kind,  # type: ignore[arg-type]
            max_train_frames=train_params.get("max_train_frames"),
            max_val_frames=train_params.get("max_val_frames"),
            seed=seed,
        )
        out = spec.checkpoint_for(dataset, strategy, fold)
        print(f"training {out} on {len(data.train)} frames ({spec.energy_kind} energies) ...", flush=True)
        record = train_fold(data, out, spec.energy_kind, train_params.get("hyper") or {}, device=device, seed=seed, log_file=out.with_suffix(".log"), threads=train_params.get("threads"))  # type: ignore[arg-type]
        records[f"{strategy}-{fold}"] = {"strategy": strategy, "fold": fold, **record}
        skipped_rows += [{"frame_id": s["frame_id"], "strategy": strategy, "fold": fold, "field": "energy", "reason": f"{s['role']}: {s['reason']}"} for s in data.skipped]
    models_out = paths.models_dir
    write_parquet(pa.Table.from_pylist(skipped_rows, schema=SKIPPED_SCHEMA), models_out / "skipped.parquet")
    summary = {
        "model": spec.name,
        "dataset": dataset,
        "folds": records,
        "totals": {
            "models": len(records),
            "train_frames": sum(r["n_train"] for r in records.values()),
            "valid_frames": sum(r["n_valid"] for r in records.values()),
            "skipped_frames": len(skipped_rows),
            "capped_frames": sum(r["n_capped"] for r in records.values()),
            "seconds": round(sum(r["seconds"] for r in records.values()), 1),
        },
    }
    write_json(summary, paths.metrics("train"))
    return summary
