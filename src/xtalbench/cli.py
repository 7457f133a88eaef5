"""`xtalbench <command>`: the entry point dvc.yaml calls.

Each command is a thin wrapper in `xtalbench.commands.<name>` exposing `HELP`,
`add_arguments(parser)` and `run(args) -> int`; modules are imported only when their
command runs, so `xtalbench query` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "fetch": "fetch a dataset into datasets/<name>/frames.parquet",
    "dedup": "MD-HIT-style near-duplicate removal",
    "featurize": "SOAP and composition features",
    "split": "LOCO / random / element / spacegroup / forward splits",
    "train": "train small MACE models on split folds",
    "evaluate": "run MLIPs and write predictions and metrics",
    "report": "summaries, model and dataset cards, governance gates",
    "diff": "metric diff against a git revision, with regression gates",
    "release": "pin and tag a dataset release",
    "plan": "estimate time and memory of a pipeline",
    "query": "run SQL (DuckDB) over the Parquet artifacts",
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="xtalbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    commands = {}
    for name, help_text in COMMANDS.items():
        commands[name] = sub.add_parser(name, help=help_text, description=help_text)
        commands[name].add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, commands = build_parser()
    # The command name comes first; only its module is imported, and it adds its own arguments.
    name = next((a for a in argv if not a.startswith("-")), None)
    if name in COMMANDS:
        importlib.import_module(f"xtalbench.commands.{name}").add_arguments(commands[name])
    args = parser.parse_args(argv)
    return int(importlib.import_module(f"xtalbench.commands.{args.command}").run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
