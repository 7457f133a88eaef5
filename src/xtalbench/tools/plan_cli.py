"""`xtalbench plan <pipeline>`: estimated time and peak memory per stage, before running it."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", nargs="?", default=".", help="a pipeline directory (., pipelines/mptrj) or its dvc.yaml")
    parser.add_argument("--throughputs", default=None, help="measured throughputs (default: benchmarks/throughputs.json)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="estimate for this device (default: the params' evaluate.device)")
    parser.add_argument("--rows", type=int, default=None, help="pretend every dataset has this many frames")


def run(args: argparse.Namespace) -> int:
    from xtalbench.tools.plan import (
        DEFAULT_THROUGHPUTS,
        PlanError,
        estimate,
        format_plan,
        load_throughputs,
    )

    try:
        throughputs = load_throughputs(args.throughputs or DEFAULT_THROUGHPUTS)
        plan = estimate(args.pipeline, throughputs, device=args.device, rows=args.rows)
    except PlanError as error:
        raise SystemExit(f"xtalbench plan: {error}") from error
    print(format_plan(plan))
    return 0
