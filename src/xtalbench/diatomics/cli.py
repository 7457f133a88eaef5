"""`xtalbench diatomics <model>`: dimer curves of a model vs DFT → metrics/diatomics/<model>.json."""

from __future__ import annotations

import argparse
import json

from xtalbench.core.project import load_params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model name (models/<model>.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from xtalbench.diatomics.stage import diatomics

    metrics = diatomics(args.model, load_params(args.params), progress=not args.no_progress)
    print(json.dumps(metrics["summary"], indent=2))
    return 0
