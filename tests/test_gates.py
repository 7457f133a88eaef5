"""Gate rules: parsing, flattening like DVC, thresholds, tolerances, statuses, and the real params.yaml block."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xtalbench.core.project import load_params
from xtalbench.governance.gates import (
    FAIL,
    NOT_COMPUTED,
    PASS,
    TRACKED,
    Gate,
    GateError,
    collect_metrics,
    evaluate,
    flatten,
    governance_detail_markdown,
    governance_markdown,
    parse_gates,
)

ROOT = Path(__file__).resolve().parents[1]


def gate(**kw) -> Gate:
    return Gate.from_dict({"metric": "a.b", "direction": "lower", **kw}, 0)


@pytest.mark.parametrize("rule, message", [
    ({"metric": "x", "direction": "down"}, r"gates\[0\]: `direction` must be one of"),
    ({"direction": "lower"}, r"gates\[0\]: `metric` is required"),
    ({"metric": "x", "direction": "lower", "tolerance": 0.1}, r"unknown key\(s\) \['tolerance'\]"),
    ({"metric": "x", "direction": "lower", "tolerance_rel": -0.1}, r"`tolerance_rel` must be >= 0"),
    ({"metric": "x", "direction": "lower", "max": "2%"}, r"`max` must be a number, got '2%'"),
    ({"metric": "x", "direction": "lower", "required": "yes"}, r"`required` must be true or false"),
])
def test_malformed_rules_name_the_rule_and_key(rule, message):
    with pytest.raises(GateError, match=message):
        parse_gates({"gates": [rule]})


def test_duplicate_names_and_non_list_rejected():
    with pytest.raises(GateError, match="duplicate name"):
        parse_gates({"gates": [{"metric": "x", "direction": "lower"}, {"metric": "x", "direction": "higher"}]})
    with pytest.raises(GateError, match="must be a list"):
        parse_gates({"gates": {"metric": "x"}})


def test_flatten_matches_dvc_keys():
    flat = flatten({"strategies": {"loco": {"mean": {"test": {"f1": 0.5, "n": 3, "sizes": [1, 2]}}}}, "x": None})
    assert flat == {"strategies.loco.mean.test.f1": 0.5, "strategies.loco.mean.test.n": 3, "x": None}


def test_thresholds_and_statuses():
    g = gate(min=1.0, max=2.0)
    assert g.check_value(1.5)[0] == PASS
    assert g.check_value(0.5) == (FAIL, "0.5 < min 1")
    assert g.check_value(2.5)[0] == FAIL
    assert g.check_value(None)[0] == NOT_COMPUTED
    assert g.check_value(float("nan"))[0] == NOT_COMPUTED
    assert gate().check_value(99.0)[0] == TRACKED


@pytest.mark.parametrize("direction, old, new, tol, worse", [
    ("lower", 10.0, 10.4, {"tolerance_rel": 0.05}, False),   # +4% within 5%
    ("lower", 10.0, 10.6, {"tolerance_rel": 0.05}, True),    # +6% past 5%
    ("lower", 10.0, 10.6, {"tolerance_rel": 0.05, "tolerance_abs": 1.0}, False),  # the larger allowance applies
    ("higher", 0.80, 0.76, {"tolerance_abs": 0.05}, False),
    ("higher", 0.80, 0.70, {"tolerance_abs": 0.05}, True),
    ("higher", 0.80, 0.95, {}, False),                       # improvement never fails
    ("lower", 10.0, 10.0 + 1e-9, {}, True),                  # zero tolerance is strict
])
def test_regression_tolerances(direction, old, new, tol, worse):
    status, reason = gate(direction=direction, **tol).check_change(old, new)
    assert (status == FAIL) is worse, reason
    assert gate(direction=direction, **tol).check_change(None, new)[0] == NOT_COMPUTED


def test_evaluate_over_files(tmp_path):
    (tmp_path / "metrics" / "a").mkdir(parents=True)
    (tmp_path / "metrics/a/m1.json").write_text(json.dumps({"s": {"f1": 0.9, "fk": 0.01}}))
    (tmp_path / "metrics/a/m2.json").write_text(json.dumps({"s": {"f1": 0.4, "fk": None}}))
    gates = parse_gates({"gates": [
        {"name": "f1", "metric": "s.f1", "file": "metrics/*/*.json", "direction": "higher", "min": 0.5},
        {"name": "fk", "metric": "s.fk", "file": "metrics/*/*.json", "direction": "lower", "max": 0.02, "required": True},
        {"name": "absent", "metric": "s.coverage", "direction": "higher", "min": 0.9},
        {"name": "info", "metric": "s.f1", "file": "metrics/a/m2.json", "direction": "higher", "min": 0.5, "enforce": False},
    ]})
    results = evaluate(gates, collect_metrics(gates, tmp_path))
    by = {(r.gate.name, r.file): r for r in results}
    assert by[("f1", "metrics/a/m1.json")].status == PASS
    assert by[("f1", "metrics/a/m2.json")].status == FAIL and by[("f1", "metrics/a/m2.json")].blocking
    assert by[("fk", "metrics/a/m1.json")].status == PASS
    assert by[("fk", "metrics/a/m2.json")].status == FAIL  # required and null
    assert by[("absent", "metrics/*/*.json")].status == NOT_COMPUTED and not by[("absent", "metrics/*/*.json")].blocking
    assert by[("info", "metrics/a/m2.json")].status == FAIL and not by[("info", "metrics/a/m2.json")].blocking
    md = governance_markdown(results)
    assert "**Overall: FAIL**" in md
    # one section per metrics file's model; `absent` matches nothing: reported once, as configuration
    assert "## `m1`" in md and "## `m2`" in md
    assert md.count("gate `absent`: **NOT-COMPUTED**") == 1 and "| absent |" not in md
    assert "| fk | **FAIL** | a | `s.fk` | not computed |" in md
    detail = governance_detail_markdown(results)
    assert detail.count("\n| ") == len(results) + 1


def test_structurally_absent_metrics_are_not_rows(tmp_path):
    """A null metric its file notes as impossible (no labels for it) is not gated; a gate whose
    every match is so noted is one configuration error, not one row per file × strategy."""
    (tmp_path / "metrics" / "a").mkdir(parents=True)
    notes = {"energy_mae": "no DFT `energy` labels in the dataset"}
    (tmp_path / "metrics/a/m1.json").write_text(json.dumps(
        {"s": {"x": {"energy_mae": None, "f1": 0.7}, "y": {"energy_mae": None, "f1": None}}, "notes": notes}))
    (tmp_path / "metrics/a/m2.json").write_text(json.dumps({"s": {"x": {"energy_mae": 12.0}}}))
    gates = parse_gates({"gates": [
        {"name": "e", "metric": "s.*.energy_mae", "file": "metrics/a/m1.json", "direction": "lower", "max": 50},
        {"name": "e_all", "metric": "s.*.energy_mae", "file": "metrics/*/*.json", "direction": "lower", "max": 50},
        {"name": "f1", "metric": "s.*.f1", "file": "metrics/*/*.json", "direction": "higher", "min": 0.5},
    ]})
    results = evaluate(gates, collect_metrics(gates, tmp_path))
    rows = [(r.gate.name, r.file, r.key, r.status, r.unmatched) for r in results]
    assert rows == [
        ("e", "metrics/a/m1.json", "s.*.energy_mae", NOT_COMPUTED, True),
        ("e_all", "metrics/a/m2.json", "s.x.energy_mae", PASS, False),
        ("f1", "metrics/a/m1.json", "s.x.f1", PASS, False),
        ("f1", "metrics/a/m1.json", "s.y.f1", NOT_COMPUTED, False),   # null but not noted: a real gap
    ]


def test_collect_metrics_names_malformed_file(tmp_path):
    (tmp_path / "metrics" / "a").mkdir(parents=True)
    (tmp_path / "metrics/a/bad.json").write_text('{"x": 1,,}')
    with pytest.raises(GateError, match=r"metrics/a/bad\.json: malformed JSON at line 1"):
        collect_metrics([gate(file="metrics/*/*.json")], tmp_path)


def test_repository_gates_parse_and_one_is_required():
    gates = parse_gates(load_params(ROOT / "params.yaml"))
    assert gates, "params.yaml has no `gates`"
    assert any(g.required and g.enforce for g in gates)
    # every enforced gate gates something: a threshold or a finite regression tolerance
    for g in gates:
        assert g.min is not None or g.max is not None or g.tolerance_abs or g.tolerance_rel, g.name
