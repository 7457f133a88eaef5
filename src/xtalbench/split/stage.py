"""The split stage end to end: read features + frame metadata, write splits, card, map, metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from xtalbench.core.io import StageOutputs, expect_rows, read_json
from xtalbench.core.project import Paths, write_json, write_parquet
from xtalbench.split import SplitData, SplitRun, build_splits, load_split_data, to_table
from xtalbench.split.common import TEST, TRAIN, VAL
from xtalbench.split.plot import kpca_map, kpca_points


def composition_of_materials(data: SplitData) -> np.ndarray | None:
    """Composition vector of each material's representative frame, if features carry them."""
    if not data.has_feature("composition"):
        return None
    return data.gather(data.representatives(), "composition").astype(np.float64)


def composition_metric(params: dict[str, Any]) -> str:
    kind = (params.get("featurize") or {}).get("composition")
    try:
        from xtalbench.descriptors.composition import KIND_METRIC
    except ImportError:
        return "manhattan"
    return KIND_METRIC.get(kind, "manhattan")


def split_metrics(data: SplitData, run: SplitRun, input_counts: dict[str, Any]) -> dict[str, Any]:
    counts = data.frame_counts()
    out: dict[str, Any] = {"input": input_counts, "strategies": {}}
    for name, result in run.results.items():
        folds = {}
        for k, fold in enumerate(result.folds):
            sizes = {role: int(counts[fold.roles == code].sum()) for role, code in (("train", TRAIN), ("val", VAL), ("test", TEST))}
            assert sum(sizes.values()) == data.n_frames, "every frame has exactly one role per fold"
            folds[str(k)] = {"name": fold.name, **sizes}
        entry: dict[str, Any] = {"n_folds": len(result.folds), "folds": folds}
        if "cluster_sizes" in result.info:
            entry["cluster_sizes"] = result.info["cluster_sizes"]
        if isinstance(result.info.get("skipped"), str):
            entry["skipped"] = result.info["skipped"]
        out["strategies"][name] = entry
    return out


def run_split(dataset: str, paths: Paths, params: dict[str, Any], frames: Path) -> dict[str, Any]:
    """Every output goes through `core.io.StageOutputs`: all appear together (metrics last) or none."""
    split_params = params.get("split") or {}
    expect_rows(paths.features, paths.metrics("featurize"), "rows_written")  # features of another run: refused
    with StageOutputs(f"split {dataset}") as out:
        data, input_counts = load_split_data(paths.features, frames, int(split_params.get("chunk_rows", 2048)))
        run = build_splits(data, split_params)
        return _write_split_outputs(dataset, paths, params, split_params, data, run, input_counts, out)


def _write_split_outputs(dataset, paths, params, split_params, data, run, input_counts, out) -> dict[str, Any]:
    from xtalbench.split.card import build_card, render_markdown

    for name, result in run.results.items():
        write_parquet(to_table(result, data), out.path(paths.split(name)))
    dedup_path = paths.metrics("dedup")
    dedup = read_json(dedup_path) if dedup_path.exists() else None  # a corrupt file: an error naming it
    card = build_card(
        dataset, data, run, split_params,
        composition=composition_of_materials(data),
        composition_metric=composition_metric(params),
        dedup_metrics=dedup,
        input_counts=input_counts,
    )
    write_json(card, out.path(paths.splits_dir / "split_card.json"))
    out.path(paths.splits_dir / "split_card.md").write_text(render_markdown(card))
    kpca_map(run.material_coords, run.results.get("loco"), out.path(paths.plots_dir / "kpca_map.png"), title=dataset)
    kpca_points(data.materials, run.material_coords, run.results.get("loco"), out.path(paths.plots_dir / "kpca_map.csv"))
    metrics = split_metrics(data, run, input_counts)
    write_json(metrics, out.path(paths.metrics("split")))
    return metrics
