"""`xtalbench dedup <dataset> [--sweep]`: MD-HIT-style near-duplicate removal (params `dedup`).

Streams `frames.parquet` in row-group batches (see `xtalbench.dedup.stage`): memory is bounded by the
descriptor matrix of one judged frame per material, not by the number of frames.
"""

from __future__ import annotations

import argparse
import csv
import io
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset name in params.yaml `datasets`")
    parser.add_argument("--sweep", action="store_true", help="also write plots/<dataset>/dedup_sweep.csv|json (kept vs threshold)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from xtalbench.core.project import Paths, dataset_params, load_params, write_json
    from xtalbench.dedup.io import FrameSource
    from xtalbench.dedup.stage import dataset_config, dedup_file, sweep

    params = load_params(args.params)
    dataset_params(params, args.dataset)
    cfg = dataset_config(params.get("dedup") or {}, args.dataset)
    paths = Paths(args.dataset)
    source = FrameSource(paths.frames)  # clear error if fetch has not run
    progress = not args.no_progress
    start = time.perf_counter()
    cache: dict | None = {} if args.sweep else None  # descriptors computed once for both
    metrics = dedup_file(source.path, paths.dedup, paths.dedup_clusters, cfg, progress=progress, cache=cache)
    write_json(metrics, paths.metrics("dedup"))
    print(
        f"dedup {args.dataset}: read {metrics['read']['frames']} frames / {metrics['read']['materials']} materials, "
        f"kept {metrics['kept']['frames']} / {metrics['kept']['materials']} "
        f"({time.perf_counter() - start:.1f} s)"
    )
    if args.sweep:
        rows = sweep(source, cfg, cfg.get("sweep") or {}, progress=progress, cache=cache)
        paths.plots_dir.mkdir(parents=True, exist_ok=True)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["level", "metric", "threshold", "kept", "read"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        (paths.plots_dir / "dedup_sweep.csv").write_text(buffer.getvalue())
        write_json(rows, paths.plots_dir / "dedup_sweep.json")
    return 0
