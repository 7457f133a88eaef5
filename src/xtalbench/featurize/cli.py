"""`xtalbench featurize <dataset>`: SOAP (+ composition) vectors → datasets/<name>/features.parquet."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xtalbench.core.io import StageOutputs, expect_rows
from xtalbench.core.project import Paths, write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a key of params.yaml `datasets`")
    parser.add_argument("--input", default=None, help="frames Parquet to featurize (default: datasets/<name>/dedup.parquet)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from xtalbench.core.parallel import compute_options
    from xtalbench.core.params import read_params
    from xtalbench.featurize import params as featurize_params
    from xtalbench.featurize.stage import featurize_file

    params = read_params(args.params, args.dataset)
    settings = featurize_params.load(params, args.params)
    compute = compute_options(params, args.params)
    compute.pop("chunk_rows")  # featurize sets its own chunk size (wide rows)
    paths = Paths(args.dataset)
    source = Path(args.input) if args.input else paths.dedup
    if not source.exists():
        raise SystemExit(f"{source} does not exist: run `xtalbench dedup {args.dataset}` first (or pass --input)")
    if not args.input:  # refuse a dedup.parquet that is not the one dedup's metrics describe
        expect_rows(source, paths.metrics("dedup"), "kept.frames")
    with StageOutputs(f"featurize {args.dataset}") as out:  # all outputs together, metrics last
        summary = featurize_file(
            source,
            out.path(paths.features),
            settings.as_config(),  # the section as written, validated
            quarantine=out.path(paths.data_dir / "featurize_quarantine.parquet"),
            compute=compute,
            progress=not args.no_progress,
        )
        write_json(summary, out.path(paths.metrics("featurize")))
    print(json.dumps({k: v for k, v in summary.items() if k != "soap"}, indent=2))
    return 0
