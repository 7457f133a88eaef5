"""`xtalbench zeroshot <dataset> <model>`: zero-shot predictions and scores of a pretrained model."""

from __future__ import annotations

import argparse
import json

from xtalbench.core.project import load_params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a key of params.yaml `datasets` with a `level_of_theory`")
    parser.add_argument("model", help="a model name (models/<model>.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from xtalbench.zeroshot.stage import zeroshot

    metrics = zeroshot(args.dataset, args.model, load_params(args.params), progress=not args.no_progress)
    print(json.dumps({"scores": metrics["scores"], "notes": metrics["notes"]}, indent=2))
    return 0
