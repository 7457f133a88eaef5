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
    from xtalbench.core.io import StageOutputs, expect_rows
    from xtalbench.core.params import read_params
    from xtalbench.core.project import Paths, write_json
    from xtalbench.dedup import params as dedup_params
    from xtalbench.dedup.io import FrameSource
    from xtalbench.dedup.stage import dedup_file, sweep

    settings = dedup_params.load(read_params(args.params, args.dataset), args.params).for_dataset(args.dataset, args.params)
    cfg = settings.as_config()  # the section as written (+ this dataset's override), validated
    paths = Paths(args.dataset)
    source = FrameSource(paths.frames)  # clear error if fetch has not run
    expect_rows(paths.frames, paths.metrics("fetch"), "kept")  # refuse frames from another or an interrupted fetch
    expect_rows(paths.frames, paths.data_version, "counts.kept")
    progress = not args.no_progress
    start = time.perf_counter()
    cache: dict | None = {} if args.sweep else None  # descriptors computed once for both
    # every output appears together (metrics last) or not at all: see xtalbench.core.io.StageOutputs
    with StageOutputs(f"dedup {args.dataset}") as out:
        metrics = dedup_file(source.path, out.path(paths.dedup), out.path(paths.dedup_clusters), cfg, progress=progress, cache=cache)
        write_json(metrics, out.path(paths.metrics("dedup")))
        if args.sweep:
            rows = sweep(source, cfg, {} if settings.sweep is None else settings.sweep.model_dump(), progress=progress, cache=cache)
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=["level", "metric", "threshold", "kept", "read"], lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            out.path(paths.plots_dir / "dedup_sweep.csv").write_text(buffer.getvalue())
            write_json(rows, out.path(paths.plots_dir / "dedup_sweep.json"))
    print(
        f"dedup {args.dataset}: read {metrics['read']['frames']} frames / {metrics['read']['materials']} materials, "
        f"kept {metrics['kept']['frames']} / {metrics['kept']['materials']} "
        f"({time.perf_counter() - start:.1f} s)"
    )
    return 0
