"""`xtalbench diff [--rev HEAD~1] [--md diff.md]`: metric diff against a git revision, gated.

Exit code 1 iff an enforced gate regresses past its tolerance, fails an absolute threshold, or
a required metric is missing; 0 otherwise (also when there is no baseline revision).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from xtalbench.core.project import load_params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rev", default="HEAD~1", help="git revision holding the baseline metrics (default: HEAD~1)")
    parser.add_argument("--md", metavar="PATH", help="also write the table as Markdown (for a PR comment)")
    parser.add_argument("--all", action="store_true", help="list unchanged, ungated metrics too")
    parser.add_argument("--root", default=".", help="repository root (default: .)")


def run(args: argparse.Namespace) -> int:
    from xtalbench.governance.diff import (
        DiffError,
        render_markdown,
        render_text,
        run_diff,
    )
    from xtalbench.governance.gates import GateError, parse_gates

    try:
        gates = parse_gates(load_params(args.params))
        result = run_diff(args.rev, gates, cwd=args.root, show_all=args.all)
    except (DiffError, GateError) as error:
        raise SystemExit(f"diff: {error}") from None
    print(render_text(result), end="")
    if args.md:
        path = Path(args.md)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_markdown(result))
    return 1 if result.failed else 0
