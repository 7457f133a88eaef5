"""Metric diff against a git revision, with the gates' directions, tolerances and thresholds.

`dvc metrics diff --json --all <rev>` does the reading (workspace vs the metrics committed at
`rev`); this module decides what is better or worse and which gate fails. A revision that does
not exist (a first commit, a shallow clone) means "no baseline": only absolute thresholds and
required metrics are checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xtalbench.core.errors import XtalbenchError
from xtalbench.governance.gates import (
    FAIL,
    NOT_COMPUTED,
    PASS,
    TRACKED,
    Gate,
    GateError,
    flatten,
    is_number,
)


class DiffError(XtalbenchError, RuntimeError):
    pass


@dataclass
class DiffRow:
    file: str
    key: str
    old: Any
    new: Any
    gates: list[str] = field(default_factory=list)
    verdict: str = ""          # better | worse | same | new | removed | ""
    status: str = "ungated"    # PASS | FAIL | FAIL (info) | NOT-COMPUTED | TRACKED | ungated
    reasons: list[str] = field(default_factory=list)
    blocking: bool = False
    unmatched: bool = False    # the row of a gate that matched no metric

    @property
    def change(self) -> float | None:
        return self.new - self.old if is_number(self.old) and is_number(self.new) else None

    @property
    def relative(self) -> float | None:
        change = self.change
        return change / abs(self.old) if change is not None and self.old else None


@dataclass
class DiffResult:
    rev: str
    baseline: bool
    rows: list[DiffRow]

    @property
    def failed(self) -> bool:
        return any(r.blocking for r in self.rows)


def dvc_env() -> dict[str, str]:
    return {**os.environ, "DVC_NO_ANALYTICS": "1"}


def dvc(*args: str, cwd: str | Path = ".", check: bool = True) -> subprocess.CompletedProcess:
    """Run DVC from this interpreter (`python -m dvc`), so the venv's DVC is used."""
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=dvc_env(),
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise DiffError(f"`dvc {' '.join(args)}` failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


def revision_exists(rev: str, cwd: str | Path = ".") -> bool:
    proc = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=cwd,
                          capture_output=True, text=True)
    return proc.returncode == 0


def metrics_diff(rev: str, cwd: str | Path = ".") -> dict[str, dict[str, dict[str, Any]]]:
    """`dvc metrics diff --json --all rev`: {file: {key: {"old", "new", "diff"}}}."""
    proc = dvc("metrics", "diff", "--json", "--all", rev, cwd=cwd)
    return _parse_json(proc.stdout, f"dvc metrics diff {rev}")


def metrics_show(cwd: str | Path = ".") -> dict[str, dict[str, dict[str, Any]]]:
    """Workspace metrics in the diff shape (old = None), for when there is no baseline."""
    proc = dvc("metrics", "show", "--json", cwd=cwd)
    shown = _parse_json(proc.stdout, "dvc metrics show")
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for rev_data in shown.values():
        for path, entry in (rev_data.get("data") or {}).items():
            if "error" in entry:
                raise DiffError(f"{path}: DVC could not read it: {entry['error']}")
            out[path] = {k: {"old": None, "new": v} for k, v in flatten(entry.get("data") or {}).items()}
    return out


def _parse_json(text: str, what: str) -> dict:
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError as err:
        raise DiffError(f"{what} did not print JSON: {text[:200]!r}") from err
    if not isinstance(data, dict):
        raise DiffError(f"{what} printed {type(data).__name__}, expected an object")
    return data


def apply_gates(diff: dict[str, dict[str, dict[str, Any]]], gates: list[Gate], rev: str,
                baseline: bool, show_all: bool = False) -> DiffResult:
    """Turn the raw diff into rows with verdicts and gate statuses."""
    rows: list[DiffRow] = []
    matched_gates: set[str] = set()
    for path in sorted(diff):
        for key, entry in sorted(diff[path].items()):
            if not isinstance(entry, dict):
                raise GateError(f"{path}: key {key!r} has no old/new values in the diff")
            old, new = entry.get("old"), entry.get("new")
            if not (is_number(old) or is_number(new) or old is None and new is None):
                continue  # strings and booleans are not metrics one can gate
            row = DiffRow(path, key, old, new)
            _judge(row, [g for g in gates if g.matches(path, key)], matched_gates)
            if show_all or row.gates or (row.change not in (None, 0) or row.verdict in ("new", "removed")):
                rows.append(row)
    for gate in gates:
        if gate.name not in matched_gates:
            status = FAIL if gate.required else NOT_COMPUTED
            reason = "required metric not found" if gate.required else "metric not computed"
            rows.append(DiffRow(gate.file, gate.metric, None, None, [gate.name], "", _info(status, gate),
                                [reason], status == FAIL and gate.enforce, unmatched=True))
    return DiffResult(rev, baseline, rows)


def _judge(row: DiffRow, gates: list[Gate], matched: set[str]) -> None:
    old, new = row.old, row.new
    if is_number(new) and not is_number(old):
        row.verdict = "new"
    elif is_number(old) and not is_number(new):
        row.verdict = "removed"
    statuses: list[str] = []
    for gate in gates:
        matched.add(gate.name)
        row.gates.append(gate.name)
        if row.verdict not in ("new", "removed") and row.change is not None:
            worse = gate.worsening(old, new)
            row.verdict = "worse" if worse > 0 else "better" if worse < 0 else "same"
        status, reason = gate.check_value(new)
        if status == NOT_COMPUTED and (gate.required or is_number(old)):
            status, reason = FAIL, "metric disappeared" if is_number(old) else "required metric is null"
        if status != FAIL:
            change_status, change_reason = gate.check_change(old, new)
            if change_status in (FAIL, PASS):
                status = FAIL if change_status == FAIL else (PASS if status in (PASS, TRACKED) else status)
                reason = change_reason if change_status == FAIL else f"{reason}; {change_reason}"
        statuses.append(_info(status, gate))
        row.reasons.append(f"{gate.name}: {reason}")
        row.blocking |= status == FAIL and gate.enforce
    if statuses:
        order = [FAIL, f"{FAIL} (info)", NOT_COMPUTED, TRACKED, PASS]
        row.status = min(statuses, key=lambda s: order.index(s) if s in order else len(order))


def _info(status: str, gate: Gate) -> str:
    return f"{FAIL} (info)" if status == FAIL and not gate.enforce else status


def run_diff(rev: str, gates: list[Gate], cwd: str | Path = ".", show_all: bool = False) -> DiffResult:
    if revision_exists(rev, cwd):
        return apply_gates(metrics_diff(rev, cwd), gates, rev, True, show_all)
    return apply_gates(metrics_show(cwd), gates, rev, False, show_all)


def _num(value: Any) -> str:
    if not is_number(value):
        return "—"
    return f"{value:.4g}"


def _change(row: DiffRow) -> str:
    if row.change is None:
        return "—"
    text = f"{row.change:+.4g}"
    return text + (f" ({row.relative:+.1%})" if row.relative is not None else "")


def table(result: DiffResult) -> list[list[str]]:
    header = ["file", "metric", "old", "new", "change", "better/worse", "gate status"]
    body = [[r.file, r.key, _num(r.old), _num(r.new), _change(r), r.verdict or "—", r.status] for r in result.rows]
    return [header, *body]


def render_text(result: DiffResult) -> str:
    rows = table(result)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [_headline(result), ""]
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += ["", *_failures(result)]
    return "\n".join(lines).rstrip() + "\n"


def severity(row: DiffRow) -> tuple:
    """Sort key, worst first: enforced failures, informational failures, then gated rows by how
    much worse they got (relative to the old value), then ungated changes by |relative change|."""
    rank = 0 if row.blocking else 1 if row.status.startswith(FAIL) else 2 if row.gates else 3
    worse = 0.0
    if row.change is not None:
        size = abs(row.change) / (abs(row.old) if row.old else 1.0)
        worse = size if not row.gates else {"worse": size, "better": -size}.get(row.verdict, 0.0)
    return (rank, -worse, row.file, row.key)


def changed_rows(result: DiffResult) -> list[DiffRow]:
    """Rows whose value changed, appeared or disappeared, or that fail a gate; worst first."""
    rows = [r for r in result.rows if (r.old is not None or r.new is not None)   # unmatched gates: in the summary
            and (r.status.startswith(FAIL) or r.change not in (None, 0) or r.verdict in ("new", "removed"))]
    return sorted(rows, key=severity)


def gate_summary(result: DiffResult) -> str:
    """One line: gated metrics worse / within tolerance / better, failures, unmatched gates."""
    gated = [r for r in result.rows if r.gates and (r.old is not None or r.new is not None)]
    failed = sum(r.status.startswith(FAIL) for r in gated)
    within = sum(r.verdict == "worse" and not r.status.startswith(FAIL) for r in gated)
    unmatched = sorted({g for r in result.rows if r.unmatched for g in r.gates})
    text = (f"Gates: {len(gated)} gated metrics; {failed} FAIL, {within} worse but within tolerance, "
            f"{sum(r.verdict == 'better' for r in gated)} better, {sum(r.verdict == 'same' for r in gated)} unchanged")
    return text + (f"; matching no metric: {', '.join(f'`{g}`' for g in unmatched)}." if unmatched else ".")


def render_markdown(result: DiffResult, max_rows: int = 25) -> str:
    """Short enough for a PR comment: changed metrics only, worst first, gates in one line."""
    rows = changed_rows(result)
    header = table(result)[0]
    lines = ["## xtalbench metric diff", "", _headline(result, f"{len(rows)} changed metric(s)"), "", gate_summary(result), ""]
    if not rows:
        lines.append("No metric changed.")
    else:
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in rows[:max_rows]:
            status = f"**{r.status}**" if r.status.startswith(FAIL) else r.status
            cells = [f"`{r.file}`", f"`{r.key}`", _num(r.old), _num(r.new), _change(r), r.verdict or "—", status]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        if len(rows) > max_rows:
            lines += ["", f"… and {len(rows) - max_rows} more changed metric(s): run `xtalbench diff` for all."]
    failures = _failures(result)
    if failures:
        lines += ["", "<details><summary>Gate failures</summary>", "", *[f"- {f}" for f in failures], "", "</details>"]
    return "\n".join(lines) + "\n"


def _headline(result: DiffResult, count: str | None = None) -> str:
    base = f"against `{result.rev}`" if result.baseline else f"no baseline (`{result.rev}` not found): thresholds only"
    verdict = "FAIL: a gate regressed or a threshold failed" if result.failed else "PASS"
    return f"Metrics diff {base}. {count or f'{len(result.rows)} row(s)'}. Result: {verdict}."


def _failures(result: DiffResult) -> list[str]:
    return [f"{r.file} {r.key}: {'; '.join(r.reasons)}" for r in result.rows if r.status.startswith(FAIL)]
