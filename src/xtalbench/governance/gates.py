"""Regression gates: rules over flattened metric keys, their evaluation, and the governance report.

A gate (one entry of params.yaml `gates`) names metrics by two globs — `file` over metrics
file paths (relative to the repository root) and `metric` over the flattened keys inside a
file, exactly as `dvc metrics diff` prints them (nested dict keys joined by "."; fnmatch `*`
also matches dots) — and says which direction is better. It can hold a metric to absolute
thresholds (`min`, `max`) and, in `xtalbench diff`, to a tolerance against a baseline
(`tolerance_abs` in the metric's own units, `tolerance_rel` as a fraction of the old value;
when both are given the larger allowance applies).

Statuses: PASS, FAIL, NOT-COMPUTED (no such metric, or null), TRACKED (matched, no absolute
threshold: only `xtalbench diff` can fail it). A `required: true` gate whose metric is absent
FAILs. An `enforce: false` gate is informational: it is reported, never fails a run.

Structural applicability: a metrics file lists under `notes.<metric>` (a string: the reason) the
metrics that cannot exist for that model and dataset (no force labels on relaxed structures, no
formation energies on trajectory frames). A null value whose metric is so noted is not a gate
row at all. A gate that matches no applicable metric anywhere is a configuration error, reported
once (one row, `unmatched`), never once per file and key.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xtalbench.core.errors import XtalbenchError

PASS, FAIL, NOT_COMPUTED, TRACKED = "PASS", "FAIL", "NOT-COMPUTED", "TRACKED"
DIRECTIONS = ("lower", "higher")
_KEYS = {"name", "metric", "file", "direction", "tolerance_abs", "tolerance_rel", "min", "max",
         "required", "enforce", "description"}
EPS = 1e-12


class GateError(XtalbenchError, ValueError):
    """A malformed gate rule or metrics file; the message names the rule/file and the key."""


@dataclass(frozen=True)
class Gate:
    name: str
    metric: str
    direction: str
    file: str = "metrics/*/*.json"
    tolerance_abs: float = 0.0
    tolerance_rel: float = 0.0
    min: float | None = None
    max: float | None = None
    required: bool = False
    enforce: bool = True
    description: str = ""

    @classmethod
    def from_dict(cls, rule: Mapping[str, Any], index: int) -> Gate:
        where = f"params.yaml gates[{index}]"
        if not isinstance(rule, Mapping):
            raise GateError(f"{where}: expected a mapping, got {type(rule).__name__}")
        unknown = set(rule) - _KEYS
        if unknown:
            raise GateError(f"{where}: unknown key(s) {sorted(unknown)} (allowed: {sorted(_KEYS)})")
        for key in ("metric", "direction"):
            if not isinstance(rule.get(key), str) or not rule[key]:
                raise GateError(f"{where}: `{key}` is required and must be a string")
        if rule["direction"] not in DIRECTIONS:
            raise GateError(f"{where}: `direction` must be one of {DIRECTIONS}, got {rule['direction']!r}")
        numbers: dict[str, float | None] = {}
        for key in ("tolerance_abs", "tolerance_rel", "min", "max"):
            value = rule.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise GateError(f"{where}: `{key}` must be a number, got {value!r}")
            if key.startswith("tolerance") and value is not None and value < 0:
                raise GateError(f"{where}: `{key}` must be >= 0, got {value}")
            numbers[key] = None if value is None else float(value)
        for key in ("required", "enforce"):
            if key in rule and not isinstance(rule[key], bool):
                raise GateError(f"{where}: `{key}` must be true or false, got {rule[key]!r}")
        return cls(
            name=str(rule.get("name") or rule["metric"]),
            metric=rule["metric"],
            direction=rule["direction"],
            file=str(rule.get("file") or cls.file),
            tolerance_abs=numbers["tolerance_abs"] or 0.0,
            tolerance_rel=numbers["tolerance_rel"] or 0.0,
            min=numbers["min"],
            max=numbers["max"],
            required=bool(rule.get("required", False)),
            enforce=bool(rule.get("enforce", True)),
            description=str(rule.get("description", "")),
        )

    def matches(self, path: str, key: str) -> bool:
        return fnmatch.fnmatchcase(path, self.file) and fnmatch.fnmatchcase(key, self.metric)

    @property
    def threshold_text(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        return " and ".join(parts) if parts else "—"

    @property
    def tolerance_text(self) -> str:
        parts = []
        if self.tolerance_abs:
            parts.append(f"{self.tolerance_abs:g} abs")
        if self.tolerance_rel:
            parts.append(f"{self.tolerance_rel:.3g} rel")
        return " / ".join(parts) if parts else "0"

    def check_value(self, value: Any) -> tuple[str, str]:
        """Absolute thresholds on the current value → (status, reason)."""
        if not is_number(value):
            return NOT_COMPUTED, "value is null"
        if self.min is not None and value < self.min - EPS:
            return FAIL, f"{value:.4g} < min {self.min:g}"
        if self.max is not None and value > self.max + EPS:
            return FAIL, f"{value:.4g} > max {self.max:g}"
        if self.min is None and self.max is None:
            return TRACKED, "no absolute threshold"
        return PASS, f"within {self.threshold_text}"

    def worsening(self, old: float, new: float) -> float:
        """How much worse `new` is than `old` (positive = worse) in the metric's units."""
        return new - old if self.direction == "lower" else old - new

    def allowance(self, old: float) -> float:
        return max(self.tolerance_abs, self.tolerance_rel * abs(old))

    def check_change(self, old: Any, new: Any) -> tuple[str, str]:
        """Regression against a baseline → (status, reason); thresholds are checked separately."""
        if not (is_number(old) and is_number(new)):
            return NOT_COMPUTED, "no baseline value" if is_number(new) else "value is null"
        worse = self.worsening(old, new)
        allowed = self.allowance(old)
        if worse > allowed + EPS:
            return FAIL, f"regressed by {worse:.4g} (tolerance {allowed:.4g})"
        return PASS, "within tolerance" if worse > EPS else "no regression"


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    file: str
    key: str
    value: Any
    status: str
    reason: str
    unmatched: bool = False   # the gate matched no applicable metric: a configuration error

    @property
    def blocking(self) -> bool:
        return self.status == FAIL and self.gate.enforce


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_gates(params: Mapping[str, Any]) -> list[Gate]:
    rules = params.get("gates") or []
    if not isinstance(rules, list):
        raise GateError(f"params.yaml `gates` must be a list of rules, got {type(rules).__name__}")
    gates = [Gate.from_dict(rule, i) for i, rule in enumerate(rules)]
    names = [g.name for g in gates]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise GateError(f"params.yaml gates: duplicate name(s) {duplicates}; give each rule a unique `name`")
    return gates


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts like DVC does (keys joined by "."); lists are skipped, nulls kept."""
    flat: dict[str, Any] = {}
    if isinstance(data, Mapping):
        for key, value in data.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, Mapping):
                flat.update(flatten(value, name))
            elif not isinstance(value, list):
                flat[name] = value
    return flat


def load_metrics_file(path: str | Path) -> Any:
    """Parse one metrics JSON file; a malformed file stops with its name and the parse error."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise GateError(f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from err


def collect_metrics(gates: Iterable[Gate], root: str | Path = ".") -> dict[str, dict[str, Any]]:
    """Flattened metrics of every file any gate's `file` glob matches (paths relative to root)."""
    root = Path(root)
    metrics: dict[str, dict[str, Any]] = {}
    for pattern in sorted({g.file for g in gates}):
        for match in sorted(glob.glob(pattern, root_dir=root)):
            rel = Path(match).as_posix()
            if rel not in metrics and (root / rel).is_file():
                metrics[rel] = flatten(load_metrics_file(root / rel))
    return metrics


def structurally_absent(flat: Mapping[str, Any]) -> set[str]:
    """Metric names a file declares impossible for its model and dataset (`notes.<metric>`: reason)."""
    return {k[len("notes."):] for k, v in flat.items() if k.startswith("notes.") and isinstance(v, str)}


def applicable(key: str, value: Any, absent: set[str]) -> bool:
    """False for a null metric the file says cannot exist (its last key segment is in `notes`)."""
    return is_number(value) or key.rsplit(".", 1)[-1] not in absent


def evaluate(gates: Iterable[Gate], metrics: Mapping[str, Mapping[str, Any]]) -> list[GateResult]:
    """Check every gate's absolute thresholds against the current metrics (applicable keys only)."""
    absent = {path: structurally_absent(flat) for path, flat in metrics.items()}
    results: list[GateResult] = []
    for gate in gates:
        matched = [(path, key, value) for path in sorted(metrics) for key, value in sorted(metrics[path].items())
                   if gate.matches(path, key) and applicable(key, value, absent[path])]
        if not matched:
            status = FAIL if gate.required else NOT_COMPUTED
            reason = (("required metric not found" if gate.required else "metric not found")
                      + f": the gate matches no metric that can exist (file `{gate.file}`, metric `{gate.metric}`)")
            results.append(GateResult(gate, gate.file, gate.metric, None, status, reason, unmatched=True))
            continue
        for path, key, value in matched:
            status, reason = gate.check_value(value)
            if status == NOT_COMPUTED and gate.required:
                status, reason = FAIL, "required metric is null"
            results.append(GateResult(gate, path, key, value, status, reason))
    return results


def governance_detail_markdown(results: list[GateResult], title: str = "Governance: per-metric detail") -> str:
    """Every gate × file × key with its value, threshold and status (the long form)."""
    lines = [
        f"# {title}",
        "",
        "Generated by `xtalbench report`; the summary per model is `governance.md`.",
        "",
        "| gate | status | file | metric | value | threshold | tolerance | direction | enforced | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        g = r.gate
        value = f"{r.value:.4g}" if is_number(r.value) else "not computed"
        enforced = "yes" if g.enforce else "no (informational)"
        note = r.reason + (f"; {g.description}" if g.description else "")
        lines.append(f"| {g.name} | **{r.status}** | `{r.file}` | `{r.key}` | {value} | {g.threshold_text} | "
                     f"{g.tolerance_text} | {g.direction} is better | {enforced} | {_cell(note)} |")
    return "\n".join(lines) + "\n"


def group_of(path: str) -> tuple[str, str]:
    """(model or file stem, dataset) of a metrics path `metrics/<dataset>/<stem>.json`."""
    parts = Path(path).parts
    dataset = parts[-2] if len(parts) >= 3 else ""
    return Path(path).stem, dataset


def governance_summary(results: list[GateResult]) -> dict[str, Any]:
    """Counts behind the headline: checks by status, tracked metrics, configuration errors."""
    checks = [r for r in results if not r.unmatched and r.status != TRACKED]
    return {
        "blocking": [r for r in results if r.blocking],
        "checks": {s: sum(r.status == s for r in checks) for s in (PASS, FAIL, NOT_COMPUTED)},
        "informational_fail": sum(r.status == FAIL and not r.gate.enforce for r in checks),
        "tracked": sum(r.status == TRACKED for r in results),
        "unmatched": [r for r in results if r.unmatched],
    }


def governance_markdown(results: list[GateResult], title: str = "Governance report",
                        detail: str | None = "governance_detail.md") -> str:
    """`reports/governance.md` in the model card's form: one short table per model (one row per
    threshold check; regression-tracked metrics counted in one row per gate), configuration
    errors once, the per-metric detail in `detail`."""
    summary = governance_summary(results)
    blocking, checks = summary["blocking"], summary["checks"]
    lines = [
        f"# {title}",
        "",
        f"**Overall: {'FAIL' if blocking else 'PASS'}** — checks: "
        + ", ".join(f"{n} {s}" for s, n in checks.items())
        + (f" ({summary['informational_fail']} of the FAILs informational)" if summary["informational_fail"] else "")
        + f"; {summary['tracked']} metrics under regression tracking"
        + (f"; {len(blocking)} enforced failure(s)" if blocking else "")
        + (f"; {len(summary['unmatched'])} configuration error(s)" if summary["unmatched"] else "")
        + ".",
        "",
        "Thresholds are checked here; regressions of tracked metrics against the base commit by "
        "`xtalbench diff` (tolerance column).",
    ]
    if summary["unmatched"]:
        lines += ["", "## Configuration", ""]
        lines += [f"- gate `{r.gate.name}`: **{r.status}** — {_cell(r.reason)}" for r in summary["unmatched"]]
    groups: dict[str, list[GateResult]] = {}
    for r in results:
        if not r.unmatched:
            groups.setdefault(group_of(r.file)[0], []).append(r)
    for name, rows in sorted(groups.items()):
        lines += ["", f"## `{name}`", "", "| check | status | dataset | metric | value | threshold | tolerance | enforced |",
                  "|---|---|---|---|---|---|---|---|"]
        tracked: dict[str, list[GateResult]] = {}
        for r in rows:
            if r.status == TRACKED:
                tracked.setdefault(r.gate.name, []).append(r)
                continue
            g = r.gate
            value = f"{r.value:.4g}" if is_number(r.value) else "not computed"
            lines.append(f"| {g.name} | **{r.status}** | {group_of(r.file)[1]} | `{_short(r.key)}` | {value} | "
                         f"{g.threshold_text} | {g.tolerance_text} | {'yes' if g.enforce else 'no (informational)'} |")
        for gate_name, items in tracked.items():
            g = items[0].gate
            datasets = ", ".join(sorted({group_of(r.file)[1] for r in items}))
            lines.append(f"| {gate_name} | **{TRACKED}** | {datasets} | {len(items)} metrics | — | — | "
                         f"{g.tolerance_text} | {'yes' if g.enforce else 'no (informational)'} |")
        n_tracked = sum(len(v) for v in tracked.values())
        if n_tracked:
            lines += ["", f"Regression tracking: {n_tracked} metrics, checked against the base commit by `xtalbench diff`."]
    if detail:
        lines += ["", f"Per-metric detail: [{detail}]({detail})."]
    return "\n".join(lines) + "\n"


def _short(key: str) -> str:
    """`strategies.loco.mean.test.f1` → `loco.test.f1` (the strategy, role and metric)."""
    parts = key.split(".")
    if len(parts) == 5 and parts[0] == "strategies" and parts[2] == "mean":
        return f"{parts[1]}.{parts[3]}.{parts[4]}"
    return key


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
