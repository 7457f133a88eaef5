"""`xtalbench report [dataset ...]`: summaries, dataset and model cards, governance report."""

from __future__ import annotations

import argparse
import sys

from xtalbench.core.project import load_params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("datasets", nargs="*", help="datasets to report on (default: every key of params.yaml `datasets`)")
    parser.add_argument("--root", default=".", help="repository root (default: .)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when an enforced gate fails (default: report only)")


def run(args: argparse.Namespace) -> int:
    from xtalbench.governance.gates import FAIL, GateError
    from xtalbench.report.stage import ReportError, build_reports

    params = load_params(args.params)
    datasets = args.datasets or list(params.get("datasets") or {})
    unknown = [d for d in args.datasets if d not in (params.get("datasets") or {})]
    if unknown:
        raise SystemExit(f"report: dataset(s) {unknown} not in params.yaml `datasets`")
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
