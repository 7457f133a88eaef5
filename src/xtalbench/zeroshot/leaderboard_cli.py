"""`xtalbench leaderboard`: metrics/zeroshot/leaderboard.{json,md} from every zero-shot score."""

from __future__ import annotations

import argparse
from pathlib import Path

from xtalbench.core.project import load_params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", default="metrics/zeroshot/leaderboard.json", help="JSON output")
    parser.add_argument("--markdown", default="metrics/zeroshot/leaderboard.md", help="Markdown output (reports/leaderboard.md in the report)")


def run(args: argparse.Namespace) -> int:
    from xtalbench.zeroshot.leaderboard import leaderboard

    board = leaderboard(load_params(args.params), json_out=Path(args.json), markdown_out=Path(args.markdown))
    print(f"wrote {args.json} and {args.markdown}: {len(board['models'])} models x {len(board['datasets'])} datasets")
    return 0
