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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xtalbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name, help_text in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        command.set_defaults(_module=f"xtalbench.commands.{name}")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # Parse the command name first, then let its module add its own arguments.
    name = next((a for a in argv if not a.startswith("-")), None)
    if name in COMMANDS:
        module = importlib.import_module(f"xtalbench.commands.{name}")
        subparser = parser._subparsers._group_actions[0].choices[name]  # type: ignore[union-attr]
        module.add_arguments(subparser)
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
