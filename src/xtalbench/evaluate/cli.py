"""`xtalbench evaluate <dataset> <model>`: predictions → datasets/<d>/predictions/<model>.parquet,
then metrics/<d>/<model>.json and parity plots through `xtalbench.evaluate.metrics.score_model`.

Prediction streams the frames in row-group chunks, in-process or on Dask (params `compute:`);
the outputs do not depend on which.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from xtalbench.core.project import Paths, dataset_params, load_params


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
    dataset: str,
    model: str,
    params: dict[str, Any],
    paths: Paths,
    frames_path: str | None = None,
    score: bool = True,
    progress: bool = True,
    models_dir: str = "models",
    compute: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Predict (streamed), then score. `compute` overrides `compute_options(params)` (e.g. to
    pass an existing Dask `client`)."""
    from xtalbench.core.device import resolve_device
    from xtalbench.core.parallel import compute_options
    from xtalbench.evaluate.stage import evaluate
    from xtalbench.models import load_spec

    eval_params = params.get("evaluate") or {}
    spec = load_spec(model, models_dir)
    folds = ((params.get("train") or {}).get("folds") or []) if spec.per_fold else []
    splits = {str(entry["strategy"]): paths.split(str(entry["strategy"])) for entry in folds}
    for strategy, path in splits.items():
        if not path.exists():
            raise SystemExit(f"{path} does not exist: run the split stage for strategy {strategy!r} first (dvc repro)")
    out = paths.predictions(spec.name)
    result = evaluate(
        dataset,
        spec,
        frames_path or paths.dedup,
        out,
        out.with_name(f"{spec.name}.skipped.parquet"),
        splits=splits,
        folds=folds,
        device=resolve_device(eval_params.get("device", "auto")),
        dtype=eval_params.get("dtype"),
        batch_size=eval_params.get("batch_size"),
        threads=eval_params.get("threads"),
        compute=compute if compute is not None else compute_options(params),
        progress=progress,
    )
    t = result.throughput
    print(f"wrote {out}: {t['rows_predicted']} rows ({t['rows_skipped']} skipped)", flush=True)
    summary: dict[str, Any] = {"throughput": t, "predictions": str(out)}
    if score:
        from xtalbench.evaluate.metrics import score_model

        summary["metrics"] = score_model(dataset, spec.resolve(dataset), out, params, t)  # streamed from the file
    return summary
