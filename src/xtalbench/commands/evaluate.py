"""`xtalbench evaluate <dataset> <model>`: predictions → datasets/<d>/predictions/<model>.parquet,
then metrics/<d>/<model>.json and parity plots through `xtalbench.metrics.score_model`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from xtalbench.project import Paths, dataset_params, load_params, read_table, write_parquet


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a key of params.yaml `datasets`")
    parser.add_argument("model", help="a model name (models/<model>.yaml) or a path to a model YAML")
    parser.add_argument("--frames", default=None, help="frames Parquet (default: datasets/<name>/dedup.parquet)")
    parser.add_argument("--no-score", action="store_true", help="write predictions only (skip metrics)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    dataset_params(params, args.dataset)
    result = evaluate_dataset(args.dataset, args.model, params, Paths(args.dataset), frames_path=args.frames, score=not args.no_score, progress=not args.no_progress)
    print(json.dumps(result["throughput"], indent=2))
    return 0


def evaluate_dataset(
    dataset: str, model: str, params: dict[str, Any], paths: Paths, frames_path: str | None = None, score: bool = True, progress: bool = True, models_dir: str = "models"
) -> dict[str, Any]:
    from xtalbench.device import resolve_device
    from xtalbench.evaluate import evaluate
    from xtalbench.models import load_spec

    eval_params = params.get("evaluate") or {}
    spec = load_spec(model, models_dir)
    frames = read_table(frames_path or paths.dedup)
    splits = {}
    folds = (params.get("train") or {}).get("folds") or [] if spec.per_fold else []
    for entry in folds:
        strategy = str(entry["strategy"])
        splits.setdefault(strategy, read_table(paths.split(strategy)))
    result = evaluate(
        dataset,
        spec,
        frames,
        splits=splits,
        folds=folds,
        device=resolve_device(eval_params.get("device", "auto")),
        dtype=eval_params.get("dtype"),
        batch_size=eval_params.get("batch_size"),
        progress=progress,
    )
    out = paths.predictions(spec.name)
    write_parquet(result.predictions, out)
    write_parquet(result.skipped, out.with_name(f"{spec.name}.skipped.parquet"))
    print(f"wrote {out}: {result.predictions.num_rows} rows ({result.skipped.num_rows} skipped)", flush=True)
    summary: dict[str, Any] = {"throughput": result.throughput, "predictions": str(out)}
    if score:
        from xtalbench.metrics import score_model

        summary["metrics"] = score_model(dataset, spec.resolve(dataset), result.predictions, params, result.throughput)
    return summary
