"""`xtalbench <command>`: the entry point dvc.yaml calls.

Each verb is a thin module (`<stage>/cli.py`, see `MODULES`) exposing
`add_arguments(parser)` and `run(args) -> int`; modules are imported only when their
command runs, so `xtalbench query` does not pay for importing torch. Library code raises
`xtalbench.core.errors.XtalbenchError`; only this entry point turns it into an exit code.
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
    "finetune": "fine-tune a pretrained model per fold: ensembles, conformal intervals, learning curve",
    "evaluate": "run MLIPs and write predictions and metrics",
    "report": "summaries, model and dataset cards, governance gates",
    "phonons": "model phonons vs DFT references (errors, bands, DOS, imaginary modes)",
    "md": "short Langevin MD per model: stability, drift, anharmonicity score σ⁽²⁾",
    "diff": "metric diff against a git revision, with regression gates",
    "release": "pin and tag a dataset release",
    "plan": "estimate time and memory of a pipeline",
    "query": "run SQL (DuckDB) over the Parquet artifacts",
    "zeroshot": "zero-shot scores of a pretrained model on a real DFT set (seen vs unseen)",
    "leaderboard": "zero-shot leaderboard: models x datasets, seen/unseen ratios, anchors, throughput",
    "diatomics": "dimer energy curves of a model vs DFT (PBE): minima, repulsion, force consistency",
}


# verb -> the module holding its CLI (one stage = one package = one verb)
MODULES = {
    "fetch": "xtalbench.fetch.cli",
    "dedup": "xtalbench.dedup.cli",
    "featurize": "xtalbench.featurize.cli",
    "split": "xtalbench.split.cli",
    "train": "xtalbench.train.cli",
    "finetune": "xtalbench.finetune.cli",
    "evaluate": "xtalbench.evaluate.cli",
    "report": "xtalbench.report.cli",
    "phonons": "xtalbench.dynamics.phonons_cli",
    "md": "xtalbench.dynamics.md_cli",
    "diff": "xtalbench.governance.diff_cli",
    "release": "xtalbench.governance.release_cli",
    "plan": "xtalbench.tools.plan_cli",
    "query": "xtalbench.tools.query_cli",
    "zeroshot": "xtalbench.zeroshot.cli",
    "leaderboard": "xtalbench.zeroshot.leaderboard_cli",
    "diatomics": "xtalbench.diatomics.cli",
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
        importlib.import_module(MODULES[name]).add_arguments(commands[name])
    args = parser.parse_args(argv)
    from xtalbench.core.errors import XtalbenchError

    try:
        return int(importlib.import_module(MODULES[args.command]).run(args) or 0)
    except XtalbenchError as error:
        print(f"xtalbench {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
