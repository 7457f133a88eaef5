"""`xtalbench diff`: gate logic on a raw diff, and end to end in a temporary git + DVC repository."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xtalbench.cli import main
from xtalbench.governance.diff import apply_gates, render_markdown, render_text
from xtalbench.governance.gates import parse_gates

GATES = parse_gates({"gates": [
    {"name": "mae", "metric": "strategies.*.mean.test.*_mae_*", "file": "metrics/*/*.json", "direction": "lower",
     "tolerance_rel": 0.05},
    {"name": "f1", "metric": "strategies.loco.mean.test.f1", "file": "metrics/*/*.json", "direction": "higher",
     "tolerance_abs": 0.02, "min": 0.3},
    {"name": "fk", "metric": "strategies.loco.mean.test.false_kill_rate", "file": "metrics/*/*.json",
     "direction": "lower", "max": 0.02, "enforce": False},
    {"name": "needed", "metric": "strategies.loco.mean.test.n", "file": "metrics/*/*.json", "direction": "higher",
     "required": True, "tolerance_abs": 0},
]})
F = "metrics/mp20/chgnet.json"
K = "strategies.loco.mean.test."


def entry(old, new):
    return {"old": old, "new": new} | ({"diff": new - old} if old is not None and new is not None else {})


def rows_by_key(result):
    return {row.key: row for row in result.rows}


def test_regression_past_tolerance_fails_and_improvement_passes():
    diff = {F: {K + "e_form_mae_meV_per_atom": entry(30.0, 31.0),   # +3.3%: within 5%
                K + "energy_mae_meV_per_atom": entry(10.0, 11.0),   # +10%: regression
                K + "f1": entry(0.60, 0.70),                        # better
                K + "n": entry(100, 100),
                K + "false_kill_rate": entry(0.10, 0.12),           # informational gate fails
                "throughput.structures_per_s": entry(11.0, 9.0)}}   # ungated
    result = apply_gates(diff, GATES, "HEAD~1", baseline=True)
    rows = rows_by_key(result)
    assert rows[K + "e_form_mae_meV_per_atom"].status == "PASS"
    assert rows[K + "e_form_mae_meV_per_atom"].verdict == "worse"
    assert rows[K + "energy_mae_meV_per_atom"].status == "FAIL" and rows[K + "energy_mae_meV_per_atom"].blocking
    assert "regressed by 1" in rows[K + "energy_mae_meV_per_atom"].reasons[0]
    assert rows[K + "f1"].verdict == "better" and rows[K + "f1"].status == "PASS"
    assert rows[K + "false_kill_rate"].status == "FAIL (info)" and not rows[K + "false_kill_rate"].blocking
    assert rows["throughput.structures_per_s"].status == "ungated" and rows["throughput.structures_per_s"].verdict == ""
    assert result.failed
    # without the regressing metric the run passes, although the informational gate still fails
    del diff[F][K + "energy_mae_meV_per_atom"]
    assert not apply_gates(diff, GATES, "HEAD~1", baseline=True).failed


def test_threshold_missing_and_removed_metrics():
    # unchanged, but below the absolute floor → FAIL; required metric absent → FAIL
    result = apply_gates({F: {K + "f1": entry(0.2, 0.2)}}, GATES, "HEAD~1", baseline=True)
    rows = rows_by_key(result)
    assert rows[K + "f1"].status == "FAIL" and "< min 0.3" in rows[K + "f1"].reasons[0]
    assert rows["strategies.loco.mean.test.n"].status == "FAIL"
    assert "required metric not found" in rows["strategies.loco.mean.test.n"].reasons[0]
    # a gated metric that disappeared fails; a new one passes (no baseline to regress from)
    result = apply_gates({F: {K + "f1": entry(0.5, None), K + "n": {"old": None, "new": 50},
                              K + "stress_mae_GPa": {"old": None, "new": 1.0}}}, GATES, "HEAD~1", True)
    rows = rows_by_key(result)
    assert rows[K + "f1"].verdict == "removed" and rows[K + "f1"].status == "FAIL"
    assert rows[K + "stress_mae_GPa"].verdict == "new" and rows[K + "stress_mae_GPa"].status == "TRACKED"


def test_rendering_lists_every_row():
    diff = {F: {K + "energy_mae_meV_per_atom": entry(10.0, 12.0), K + "n": entry(5, 5)}}
    result = apply_gates(diff, GATES, "origin/main", baseline=True)
    md = render_markdown(result)
    assert "| file | metric | old | new | change | better/worse | gate status |" in md
    assert f"| `{F}` | `{K}energy_mae_meV_per_atom` | 10 | 12 | +2 (+20.0%) | worse | **FAIL** |" in md
    assert "against `origin/main`" in md and "Gate failures" in md
    text = render_text(result)
    assert "Result: FAIL" in text and "energy_mae_meV_per_atom" in text


def test_markdown_is_short_changed_metrics_worst_first():
    """For a PR comment: unchanged metrics left out, the worst change first, gates in one line."""
    G = "strategies.random.mean.test."
    diff = {F: {
        K + "e_form_mae_meV_per_atom": entry(30.0, 36.0),      # +20%: past the 5% tolerance → FAIL
        G + "e_form_mae_meV_per_atom": entry(20.0, 20.4),      # +2%: worse, within tolerance
        K + "energy_mae_meV_per_atom": entry(10.0, 9.0),       # better
        K + "f1": entry(0.5, 0.5),                             # unchanged: left out
        K + "n": entry(40, 40),                                # unchanged (gated): left out
        "seconds": entry(100.0, 130.0),                        # ungated change: after the gated ones
        **{f"strategies.s{i}.mean.test.force_mae_meV_per_A": entry(1.0, 1.0) for i in range(30)},  # unchanged
    }}
    md = render_markdown(apply_gates(diff, GATES, "origin/main", baseline=True))
    rows = [line for line in md.splitlines() if line.startswith(f"| `{F}`")]
    keys = [r.split("|")[2].strip().strip("`") for r in rows]
    assert keys == [K + "e_form_mae_meV_per_atom", G + "e_form_mae_meV_per_atom", K + "energy_mae_meV_per_atom", "seconds"]
    # 35 gated metrics: 1 FAIL, 1 worse within tolerance, 1 better, the 32 others unchanged
    assert "Gates: 35 gated metrics; 1 FAIL, 1 worse but within tolerance, 1 better, 32 unchanged; matching no metric: `fk`." in md
    assert "4 changed metric(s)" in md
    assert len(md.splitlines()) < 20


def test_gate_summary_counts_threshold_failures_and_null_metrics_right():
    """A gate matching a metric that is null in both revisions matched it; a threshold FAIL on an
    unchanged value is not taken off the worse-but-within-tolerance count."""
    G = "strategies.random.mean.test."
    diff = {F: {K + "f1": entry(0.2, 0.2),                          # unchanged, below min 0.3: FAIL
                G + "e_form_mae_meV_per_atom": entry(20.0, 20.4),   # worse, within tolerance
                K + "false_kill_rate": {"old": None, "new": None},  # null in both: matched, not "matching no metric"
                K + "n": entry(5, 5)}}
    md = render_markdown(apply_gates(diff, GATES, "origin/main", baseline=True))
    assert "1 FAIL, 1 worse but within tolerance" in md and "matching no metric" not in md


def test_markdown_caps_rows():
    diff = {F: {f"strategies.s{i:02d}.mean.test.force_mae_meV_per_A": entry(1.0, 1.0 + i / 100) for i in range(1, 41)}}
    md = render_markdown(apply_gates(diff, GATES, "HEAD~1", baseline=True), max_rows=10)
    rows = [line for line in md.splitlines() if line.startswith(f"| `{F}`")]
    assert len(rows) == 10 and "`strategies.s40.mean.test.force_mae_meV_per_A`" in rows[0]  # the worst (+40%) first
    assert "… and 30 more changed metric(s)" in md


# --- end to end -------------------------------------------------------------------------------

def sh(*cmd: str, cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """git + DVC repo with metrics declared at top level; one commit with baseline metrics."""
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "site-cache"))
    monkeypatch.setenv("DVC_GLOBAL_CONFIG_DIR", str(tmp_path / "dvc-global"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    (tmp_path / "gitconfig").write_text("[user]\n\temail = ci@example.org\n\tname = ci\n")
    root = tmp_path / "repo"
    root.mkdir()
    sh("git", "init", "-q", cwd=root)
    sh(sys.executable, "-m", "dvc", "init", "-q", cwd=root)
    (root / "dvc.yaml").write_text("metrics:\n  - metrics\n")
    (root / "params.yaml").write_text(yaml.safe_dump({"gates": [
        {"name": "mae", "metric": "strategies.*.mean.test.*_mae_*", "file": "metrics/*/*.json", "direction": "lower",
         "tolerance_rel": 0.05, "required": True},
        {"name": "f1", "metric": "strategies.loco.mean.test.f1", "file": "metrics/*/*.json", "direction": "higher",
         "min": 0.3, "tolerance_abs": 0.02}]}))
    write_metrics(root, mae=30.0, f1=0.6)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-q", "-m", "baseline", cwd=root)
    monkeypatch.chdir(root)
    return root


def write_metrics(root: Path, mae: float, f1: float) -> None:
    path = root / "metrics" / "mp20" / "chgnet.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": "chgnet", "strategies": {"loco": {"mean": {"test": {
        "e_form_mae_meV_per_atom": mae, "f1": f1, "n": 40}}}}}))


def test_cli_diff_against_git_revision(repo, capsys):
    # first commit: HEAD~1 does not exist → no baseline, thresholds only (0.6 ≥ 0.3 passes)
    assert main(["diff", "--rev", "HEAD~1", "--md", "first.md"]) == 0
    assert "no baseline (`HEAD~1` not found)" in (repo / "first.md").read_text()

    write_metrics(repo, mae=36.0, f1=0.61)   # +20% error: past the 5% tolerance
    assert main(["diff", "--rev", "HEAD", "--md", "out/diff.md"]) == 1
    out = capsys.readouterr().out
    md = (repo / "out/diff.md").read_text()
    assert "Result: FAIL" in out
    assert "| `metrics/mp20/chgnet.json` | `strategies.loco.mean.test.e_form_mae_meV_per_atom` | 30 | 36 |" in md
    assert "| 0.6 | 0.61 | +0.01 (+1.7%) | better | PASS |" in md

    write_metrics(repo, mae=29.0, f1=0.59)   # better error, F1 within its 0.02 tolerance
    assert main(["diff", "--rev", "HEAD"]) == 0
    assert "Result: PASS" in capsys.readouterr().out
