"""`xtalbench evaluate <dataset> <model>`: predictions → datasets/<d>/predictions/<model>.parquet,
then metrics/<d>/<model>.json and parity plots through `xtalbench.evaluate.metrics.score_model`.

Prediction streams the frames in row-group chunks, in-process or on Dask (params `compute:`);
the outputs do not depend on which.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from xtalbench.core.io import StageOutputs, collect_warnings, expect_rows
from xtalbench.core.project import Paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a key of params.yaml `datasets`")
    parser.add_argument("model", help="a model name (models/<model>.yaml) or a path to a model YAML")
    parser.add_argument("--frames", default=None, help="frames Parquet (default: datasets/<name>/dedup.parquet)")
    parser.add_argument("--no-score", action="store_true", help="write predictions only (skip metrics)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    params = validated_params(args.params, args.dataset)
    result = evaluate_dataset(args.dataset, args.model, params, Paths(args.dataset), frames_path=args.frames, score=not args.no_score, progress=not args.no_progress)
    print(json.dumps(result["throughput"], indent=2))
    return 0


def validated_params(file: str, dataset: str) -> dict[str, Any]:
    """The params file with `evaluate` and `compute` validated (`train`, whose folds the
    fold-trained models read, is validated by the train stage); `evaluate` is passed on as
    written (`as_config`), so every reader applies its own defaults as before."""
    from xtalbench.core.params import load_compute, read_params
    from xtalbench.evaluate import params as evaluate_params

    params = read_params(file, dataset)
    load_compute(params, file)
    return {**params, "evaluate": evaluate_params.load(params, file).as_config()}


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
    if frames_path is None:  # refuse a dedup.parquet that is not the one dedup's metrics describe
        expect_rows(paths.dedup, paths.metrics("dedup"), "kept.frames")
    # predictions and skipped rows appear together or not at all (core.io.StageOutputs); the
    # metrics JSON is written after them, by scoring
    with StageOutputs(f"evaluate {dataset} {spec.name}") as outputs:
        result = evaluate(
            dataset,
            spec,
            frames_path or paths.dedup,
            outputs.path(out),
            outputs.path(out.with_name(f"{spec.name}.skipped.parquet")),
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

        with collect_warnings(f"evaluate {dataset} {spec.name}: scoring"):
            summary["metrics"] = score_model(dataset, spec.resolve(dataset), out, params, t)  # streamed from the file
    return summary
