"""`xtalbench split <dataset>`: splits/<name>/<strategy>.parquet, the split card and the kPCA map."""

from __future__ import annotations

import argparse
import json

from xtalbench.core.project import Paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a key of params.yaml `datasets`")
    parser.add_argument("--frames", default=None, help="frames Parquet with metadata (default: datasets/<name>/dedup.parquet)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xtalbench.core.params import read_params
    from xtalbench.split import params as split_params
    from xtalbench.split.stage import run_split

    params = read_params(args.params, args.dataset)
    settings = split_params.load(params, args.params)
    params = {**params, "split": settings.as_config()}  # the section as written, validated
    paths = Paths(args.dataset)
    frames = Path(args.frames) if args.frames else paths.dedup
    summary = run_split(args.dataset, paths, params, frames)
    print(json.dumps(summary, indent=2))
    return 0
