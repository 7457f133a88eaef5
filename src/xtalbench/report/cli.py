"""`xtalbench report [dataset ...]`: summaries, dataset and model cards, governance report."""

from __future__ import annotations

import argparse
import sys

from xtalbench.core.params import read_params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("datasets", nargs="*", help="datasets to report on (default: every key of params.yaml `datasets`)")
    parser.add_argument("--root", default=".", help="repository root (default: .)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when an enforced gate fails (default: report only)")
    parser.add_argument("--digest", metavar="DATASET", default=None,
                        help="only write report_inputs/<DATASET>.json, the md5 of every file the report reads for it (dvc.yaml report-inputs)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="overwrite existing cards even when their DVC inputs are absent (fresh clone): they say 'not computed'")


def run(args: argparse.Namespace) -> int:
    from xtalbench.governance.gates import FAIL, GateError
    from xtalbench.report import params as report_params
    from xtalbench.report.inputs import missing_for_existing_cards, write_digest
    from xtalbench.report.stage import ReportConfig, ReportError, build_reports

    params = read_params(args.params)
    report_params.load(params, args.params)  # ReportConfig reads the validated section
    if args.digest is not None:
        if args.digest not in (params.get("datasets") or {}):
            raise SystemExit(f"report --digest: dataset {args.digest!r} not in params.yaml `datasets`")
        print(f"wrote {write_digest(args.digest, args.root)}")
        return 0
    datasets = args.datasets or list(params.get("datasets") or {})
    unknown = [d for d in args.datasets if d not in (params.get("datasets") or {})]
    if unknown:
        raise SystemExit(f"report: dataset(s) {unknown} not in params.yaml `datasets`")
    stale = {} if args.allow_missing else missing_for_existing_cards(datasets, args.root, ReportConfig.from_params(params).reports_dir)
    if stale:
        lines = [f"  {card}: missing {', '.join(str(p) for p in files)}" for card, files in stale.items()]
        raise ReportError("inputs of existing cards are missing (a fresh clone? run `dvc pull` or `dvc repro` first); "
                          "not overwriting them with 'not computed' (--allow-missing does):\n" + "\n".join(lines))
    try:
        out = build_reports(datasets, params, args.root)
    except (ReportError, GateError) as error:
        raise SystemExit(f"report: {error}") from None
    for path in out["written"]:
        print(f"wrote {path}")
    failures = [r for r in out["results"] if r.blocking]
    informational = [r for r in out["results"] if r.status == FAIL and not r.gate.enforce]
    for r in failures + informational:
        tag = "FAIL" if r.gate.enforce else "FAIL (informational)"
        print(f"gate {r.gate.name}: {tag} {r.file} {r.key}: {r.reason}", file=sys.stderr)
    return 1 if failures and args.strict else 0
