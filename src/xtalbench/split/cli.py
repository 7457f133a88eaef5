"""`xtalbench split <dataset>`: splits/<name>/<strategy>.parquet, the split card and the kPCA map."""

from __future__ import annotations

import argparse
import json

from xtalbench.core.project import Paths, dataset_params, load_params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a key of params.yaml `datasets`")
    parser.add_argument("--frames", default=None, help="frames Parquet with metadata (default: datasets/<name>/dedup.parquet)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xtalbench.split.stage import run_split

    params = load_params(args.params)
    dataset_params(params, args.dataset)
    paths = Paths(args.dataset)
    frames = Path(args.frames) if args.frames else paths.dedup
    summary = run_split(args.dataset, paths, params, frames)
    print(json.dumps(summary, indent=2))
    return 0
