"""`xtalbench train <dataset>`: small MACE models on the train role of chosen split folds.

Writes models/trained/<dataset>/<strategy>-<fold>.model (+ .log) and metrics/<dataset>/train.json.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from xtalbench.core.io import StageOutputs, expect_rows
from xtalbench.core.project import (
    Paths,
    read_table,
    write_json,
    write_parquet,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a key of params.yaml `datasets`")
    parser.add_argument("--frames", default=None, help="frames Parquet (default: datasets/<name>/dedup.parquet)")


def run(args: argparse.Namespace) -> int:
    from xtalbench.core.params import read_params
    from xtalbench.train import params as train_params

    settings = train_params.load(read_params(args.params, args.dataset), args.params)
    summary = train_dataset(args.dataset, settings.as_config(), Paths(args.dataset), frames_path=args.frames)  # the section as written, validated
    print(json.dumps(summary["totals"], indent=2))
    return 0


def train_dataset(dataset: str, train_params: dict[str, Any], paths: Paths, frames_path: str | None = None, models_dir: str = "models") -> dict[str, Any]:
    """Train every configured fold of one dataset; returns (and writes) the training metrics."""
    from xtalbench.core.device import resolve_device
    from xtalbench.models import load_spec

    spec = load_spec(train_params.get("model", "mace-tiny"), models_dir).resolve(dataset)
    if spec.kind != "mace-trained":
        raise SystemExit(f"train.model {spec.name!r} has kind {spec.kind!r}; expected mace-trained")
    device = resolve_device(train_params.get("device", "auto"))
    seed = int(train_params.get("seed", 0))
    if frames_path is None:  # refuse a dedup.parquet that is not the one dedup's metrics describe
        expect_rows(paths.dedup, paths.metrics("dedup"), "kept.frames")
    frames = read_table(frames_path or paths.dedup)
    folds = train_params.get("folds") or []
    if not folds:
        raise SystemExit("params.yaml train.folds is empty: nothing to train")
    # models, logs, skipped.parquet and train.json appear together (metrics last) or not at all
    with StageOutputs(f"train {dataset}") as outputs:
        return _train_folds(dataset, train_params, paths, spec, device, seed, frames, folds, outputs)


def _train_folds(dataset, train_params, paths, spec, device, seed, frames, folds, outputs) -> dict[str, Any]:
    import pyarrow as pa

    from xtalbench.evaluate.stage import SKIPPED_SCHEMA
    from xtalbench.train.stage import fold_rows, prepare_fold, train_fold

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
        record = train_fold(data, outputs.path(out), spec.energy_kind, train_params.get("hyper") or {}, device=device, seed=seed,
                            log_file=outputs.path(out.with_suffix(".log")), threads=train_params.get("threads"))  # type: ignore[arg-type]
        record["model_file"] = str(out)  # the final name, not the temporary written to
        records[f"{strategy}-{fold}"] = {"strategy": strategy, "fold": fold, **record}
        skipped_rows += [{"frame_id": s["frame_id"], "strategy": strategy, "fold": fold, "field": "energy", "reason": f"{s['role']}: {s['reason']}"} for s in data.skipped]
    models_out = paths.models_dir
    write_parquet(pa.Table.from_pylist(skipped_rows, schema=SKIPPED_SCHEMA), outputs.path(models_out / "skipped.parquet"))
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
    write_json(summary, outputs.path(paths.metrics("train")))
    return summary
