"""The report stage on small fixture files shaped like the other stages' outputs (docs/CONTRACTS.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from xtalbench.cli import main
from xtalbench.report.stage import (
    ReportConfig,
    ReportError,
    build_reports,
    strategy_summary,
)

METRICS = ("energy_mae_meV_per_atom", "e_form_mae_meV_per_atom", "f1", "false_kill_rate", "daf")


def role_block(rng: np.random.Generator, n: int, scale: float) -> dict:
    return {"n": n, "n_materials": n, "energy_mae_meV_per_atom": None,
            "e_form_mae_meV_per_atom": float(rng.uniform(20, 40) * scale), "f1": float(rng.uniform(0.5, 0.9) / scale),
            "false_kill_rate": float(rng.uniform(0.0, 0.1)), "daf": float(rng.uniform(1, 3)),
            "cluster_sizes": {"0": n}}


def strategy_block(rng, n_folds: int, roles: tuple[str, ...], ood_scale: float) -> dict:
    folds = {str(k): {role: role_block(rng, int(rng.integers(10, 50)), ood_scale if role == "test" else 1.0)
                      for role in roles} for k in range(n_folds)}
    mean = {role: {"n_folds": n_folds, **{m: (None if m == "energy_mae_meV_per_atom" else
                                             float(np.mean([folds[k][role][m] for k in folds]))) for m in METRICS}}
            for role in roles}
    std = {role: {m: (None if m == "energy_mae_meV_per_atom" else float(np.std([folds[k][role][m] for k in folds])))
                  for m in METRICS} for role in roles}
    return {"folds": folds, "mean": mean, "std": std, "n_folds": n_folds}


def model_metrics(name: str, seed: int, loco_val: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "model": name, "dataset": "mp20", "kind": "chgnet",
        "strategies": {
            "random": strategy_block(rng, 1, ("train", "val", "test"), 1.0),
            "loco": strategy_block(rng, 3, ("val", "test") if loco_val else ("test",), 2.5),
        },
        "gap": {"numerator": "loco", "denominator": "random",
                "e_form_mae_meV_per_atom": {"ratio": 2.4, "ci_low": 2.0, "ci_high": 2.9}},
        "contamination": {"method": "database-version", "fraction": 0.97, "n_test_materials": 100,
                          "strategies": {"loco": {"folds": {"0": {"fraction": 0.9}}}}},
        "throughput": {"device": "cpu", "structures_per_s": 11.5, "atoms_per_s": 120.0},
        "notes": {"energy_mae_meV_per_atom": "the model predicts formation energies"},
    }


def fold_card(train: int, val: int, test: int, outside: float, flags: list[str]) -> dict:
    sizes = {role: {"frames": n, "materials": n} for role, n in (("train", train), ("val", val), ("test", test))}
    return {"name": "fold", "sizes": sizes, "elements_only_in_test": ["Xe"] if flags else [],
            "kpca_distance": {"test_to_train_median": 1.5, "test_to_train_p95": 3.0, "test_to_train_min": 0.2,
                              "fraction_test_outside_domain": outside, "sampled": False},
            "composition_min_distance": 0.7, "test_structures_identical_to_train": 0, "flags": flags}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def make_project(root: Path) -> Path:
    """A repository root with two datasets: `mp20` fully computed, `frames` not computed yet."""
    params = {
        "datasets": {"mp20": {"source": "shared"}, "frames": {"source": "shared"}},
        "report": {"headline_metrics": list(METRICS)},
        "gates": [
            {"name": "loco_f1", "metric": "strategies.loco.mean.test.f1", "file": "metrics/*/*.json",
             "direction": "higher", "min": 0.05, "tolerance_abs": 0.05},
            {"name": "false_kill", "metric": "strategies.*.mean.test.false_kill_rate", "file": "metrics/*/*.json",
             "direction": "lower", "max": 0.0001},
            {"name": "false_kill_info", "metric": "strategies.*.mean.test.false_kill_rate", "file": "metrics/*/*.json",
             "direction": "lower", "max": 0.0001, "enforce": False},
            {"name": "coverage", "metric": "*.coverage_90", "direction": "higher", "min": 0.9},
            {"name": "must_exist", "metric": "strategies.element.mean.test.f1", "direction": "higher", "required": True},
        ],
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    m = root / "metrics" / "mp20"
    m.mkdir(parents=True)
    (m / "fetch.json").write_text(json.dumps({"read": 120, "kept": 118, "quarantined": 2}))
    (m / "dedup.json").write_text(json.dumps({  # the dedup stage's nested {frames, materials} counts
        "read": {"frames": 118, "materials": 118}, "kept": {"frames": 100, "materials": 100},
        "dropped": {"frames": 17, "materials": 17}, "quarantined": {"frames": 1, "materials": 1},
        "thinned": {"frames": 0}, "levels": {"composition": {"threshold": 0.5}}}))
    (m / "split.json").write_text(json.dumps({"materials": 100, "strategies": {"loco": {"folds": 2}}}))
    (m / "chgnet.json").write_text(json.dumps(model_metrics("chgnet", 1)))
    (m / "mace-tiny.json").write_text(json.dumps(model_metrics("mace-tiny", 2, loco_val=False)))
    (root / "splits" / "mp20").mkdir(parents=True)
    (root / "splits" / "mp20" / "split_card.json").write_text(json.dumps({  # the split stage's card layout
        "dataset": "mp20", "seed": 0, "in_domain_flag": 0.5, "leakage": {"dedup_threshold": {"composition": 0.5}},
        "strategies": {
            "loco": {"n_folds": 2, "info": {}, "folds": {
                "0": fold_card(60, 10, 30, 0.81, []),
                "1": fold_card(55, 10, 35, 0.12, ["mostly_in_domain: only 12% of test materials lie outside"]),
            }},
            "random": {"n_folds": 1, "info": {}, "folds": {"0": fold_card(80, 10, 10, 0.02, [])}},
        }}))
    (root / "datasets" / "mp20").mkdir(parents=True)
    (root / "datasets" / "mp20" / "DATA_VERSION.json").write_text(json.dumps({
        "dataset": "mp20", "source": "shared", "source_details": {"path": "../shared/data/mp20.parquet"},
        "inputs_sha256": {"../shared/data/mp20.parquet": "ab" * 32}, "outputs_sha256": {"frames.parquet": "cd" * 32},
        "fetched_at": "2026-01-01T00:00:00+00:00", "limit": None, "packages": {"pyarrow": "26.0.1"}}))
    (root / "models").mkdir()
    (root / "models" / "chgnet.yaml").write_text(yaml.safe_dump({
        "name": "chgnet", "kind": "chgnet", "checkpoint": "0.3.0", "licence": "BSD-3-Clause",
        "training_set": {"name": "MPtrj", "database": "Materials Project", "version": "2021.2.8"},
        "limitations": ["magnetic moments are not scored here"]}))
    return root


def run_report(root: Path, *extra: str) -> int:
    # --allow-missing: the fixture's `frames` dataset has no DVC inputs on purpose
    return main(["report", "--params", str(root / "params.yaml"), "--root", str(root), "--allow-missing", *extra])


def test_summary_puts_in_and_out_of_distribution_side_by_side(project):
    assert run_report(project) == 0
    summary = json.loads((project / "metrics/mp20/summary.json").read_text())
    source = json.loads((project / "metrics/mp20/chgnet.json").read_text())["strategies"]
    loco = summary["models"]["chgnet"]["strategies"]["loco"]
    # LOCO of a zero-shot model (kind chgnet): the split's val role means nothing for it, so in
    # distribution = the random split's test score, out of distribution = LOCO's held-out test role
    assert summary["models"]["chgnet"]["type"] == "zero-shot"
    assert loco["in_distribution_source"] == "random.test"
    assert loco["in_distribution"]["f1"] == source["random"]["mean"]["test"]["f1"]
    assert loco["out_of_distribution"]["f1"] == source["loco"]["mean"]["test"]["f1"]
    # a model trained on the split: in distribution = the strategy's own val role
    trained = strategy_summary("loco", source["loco"], source["random"], ReportConfig.from_params({}), zero_shot=False)
    assert trained["in_distribution_source"] == "loco.val"
    assert trained["in_distribution"]["f1"] == source["loco"]["mean"]["val"]["f1"]
    assert loco["out_of_distribution"]["n"] == sum(f["test"]["n"] for f in source["loco"]["folds"].values())
    assert loco["out_of_distribution"]["std_f1"] == pytest.approx(source["loco"]["std"]["test"]["f1"])
    ratio = source["loco"]["mean"]["test"]["e_form_mae_meV_per_atom"] / source["random"]["mean"]["test"]["e_form_mae_meV_per_atom"]
    assert loco["ood_over_id"]["e_form_mae_meV_per_atom"] == pytest.approx(ratio)
    # random: its test role is in distribution, nothing is out of distribution
    rnd = summary["models"]["chgnet"]["strategies"]["random"]
    assert rnd["out_of_distribution"] is None and rnd["in_distribution"]["daf"] == source["random"]["mean"]["test"]["daf"]
    # no scored val role on LOCO → the random test score is the in-distribution reference
    tiny = summary["models"]["mace-tiny"]["strategies"]["loco"]
    tiny_source = json.loads((project / "metrics/mp20/mace-tiny.json").read_text())["strategies"]
    assert tiny["in_distribution_source"] == "random.test"
    assert tiny["in_distribution"]["f1"] == tiny_source["random"]["mean"]["test"]["f1"]
    assert summary["counts"]["dedup"]["kept.frames"] == 100 and summary["counts"]["fetch"]["quarantined"] == 2
    # a dataset with nothing computed yet still gets a (mostly empty) summary
    empty = json.loads((project / "metrics/frames/summary.json").read_text())
    assert empty["models"] == {} and empty["counts"]["fetch"] is None


def test_dataset_card_has_source_counts_and_split_figures(project):
    run_report(project)
    card = (project / "reports/mp20_card.md").read_text()
    assert "| source | shared |" in card
    assert "abababababab…" in card and "2026-01-01" in card
    assert "fetch: read 120 = kept 118 + quarantined 2" in card
    assert "dedup: read 118 frames = kept 100 + dropped 17 + quarantined 1 + thinned 0" in card
    # counts as a funnel table, not a dump of dotted keys: 120 read → 118 kept (2 quarantined) →
    # 100 after dedup (17 dropped + 1 quarantined + 0 thinned = 18 removed)
    assert "dropped.frames" not in card
    assert "| fetch: records read | 120 | — | — | — |" in card
    assert "| fetch: kept | 118 | — | 2 | quarantined |" in card
    assert "| dedup: kept | 100 | 100 | 18 | frames dropped + thinned + quarantined |" in card
    # per-fold split figures (sizes, OOD fraction, flags), with the flagged fold called out
    header = next(line for line in card.splitlines() if line.startswith("| fold |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    row = next(line for line in card.splitlines() if line.startswith("| 1 |") and "0.12" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[cols.index("materials train / val / test")] == "55 / 10 / 35"
    assert cells[cols.index("OOD fraction (test outside training domain)")] == "0.12"
    assert cells[cols.index("test→train distance median / p95 / min")] == "1.5 / 3 / 0.2"
    assert cells[cols.index("flags")].startswith("mostly_in_domain") and cells[cols.index("elements only in test")] == "Xe"
    assert "Flagged folds: 1." in card
    assert "[`chgnet`](chgnet_card.md)" in card
    # missing inputs are said to be missing, not crashed on
    other = (project / "reports/frames_card.md").read_text()
    assert "DATA_VERSION.json: not computed" in other and "Split card: not computed" in other
    assert "_Stage metrics: not computed._" in other


def test_model_card_sections(project):
    run_report(project)
    card = (project / "reports/chgnet_card.md").read_text()
    summary = json.loads((project / "metrics/mp20/summary.json").read_text())["models"]["chgnet"]["strategies"]["loco"]
    for section in ("## Intended use", "## Training set and contamination", "## Throughput and hardware", "## Known limitations"):
        assert section in card
    assert "MPtrj" in card and "BSD-3-Clause" in card
    assert "This is a zero-shot model" in card  # ID = the random split's test score, not LOCO's val role
    # one row with ID and OOD side by side for LOCO F1
    row = next(line for line in card.splitlines() if line.startswith("| `loco` | f1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2].startswith(f"{summary['in_distribution']['f1']:.4g}")
    assert cells[3].startswith(f"{summary['out_of_distribution']['f1']:.4g}")
    # a metric null everywhere is explained, not shown as a number
    assert "`energy_mae_meV_per_atom`: the model predicts formation energies" in card
    assert "| mp20 | `fraction` | 0.97 |" in card
    assert "structures_per_s" in card and "11.5" in card
    assert "magnetic moments are not scored here" in card
    assert re.search(r"e_form_mae_meV_per_atom is [\d.]+× higher out of distribution", card)
    assert "may be in the training set" in card
    # a model without a registry YAML still gets a card that says so
    assert "No registry entry" in (project / "reports/mace-tiny_card.md").read_text()


def test_model_card_carries_zero_shot_and_dynamics(project):
    """A model scored only by the zero-shot, phonons and MD stages gets a card; the figures come
    from those stages' files, forces converted from meV/Å to eV/Å."""
    (project / "metrics" / "zeroshot").mkdir(parents=True)
    (project / "metrics" / "zeroshot" / "leaderboard.json").write_text(json.dumps({
        "datasets": ["seen-set", "far-set"],
        "models": {"pot": {
            "seen_set": "seen-set", "seen_note": "seen-set lies inside pot's training set", "status": {"status": "ok"},
            "datasets": {
                "seen-set": {"frames": 30, "energy_mae_meV_per_atom": 10.0, "energy_mae_meV_per_atom_ci": [8.0, 12.5],
                             "force_mae_vector_norm_meV_per_A": 150.0, "force_mae_vector_norm_meV_per_A_ci": [120.0, 180.0]},
                "far-set": {"frames": 0}},
            "ratios": {"far-set": {"energy_mae_meV_per_atom": {"ratio": 4.0, "ci": [2.0, 7.5]},
                                   "stress_mae_GPa": {"ratio": 1.6, "ci": [0.8, 3.0]}}},
            "contamination": {"seen-set": {"by_id": {"fraction": 1.0}, "by_database": {"overlap": "same"}}},
            "notes": {"seen-set": ["energies compared as they are (raw vs raw)"]},
            "throughput": {"structures_per_s": 9.5, "atoms_per_s": 120.0, "structures": 30},
            "hardware": {"device": "cpu", "dtype": "float32", "batch_size": 8}}}}))
    (project / "metrics" / "dynamics").mkdir(parents=True)
    (project / "metrics" / "dynamics" / "phonons.json").write_text(json.dumps({"models": {"pot": {
        "status": "ok", "median": {"rmse_omega2_THz2": 21.6}, "like_with_like_median": {"rmse_omega2_THz2": 29.4},
        "imaginary_materials": ["CaTiO3"],
        "materials": {"MgO": {"theory_note": "same functional", "rmse_omega2_THz2": 21.6, "rmse_frequency_THz": 0.93,
                              "imaginary_band": {"count": 0}, "reference_imaginary_band": {"count": 0}}}}}}))
    (project / "metrics" / "dynamics" / "md.json").write_text(json.dumps({"params": {"steps": 100, "temperature_K": 600.0}, "models": {
        "pot": {"materials": {"MgO": {"completed": True, "steps_done": 100, "steps_requested": 100, "temperature_mean_K": 488.5,
                                      "temperature_std_K": 39.7, "sigma_dft": {"sigma_mean": 0.267, "class": "weak"},
                                      "sigma_model": {"sigma_mean": 0.25, "class": "weak"}}}}}}))
    run_report(project)
    card = (project / "reports" / "pot_card.md").read_text()
    assert "not evaluated on the root datasets' splits" in card
    assert "| `seen-set` | 30 | 10 [8, 12.5] | 0.15 [0.12, 0.18] | not computed | not computed | 1 | same |" in card
    assert "| `far-set` | 0 | not computed |" in card
    assert "| `far-set` / `seen-set` | energy_mae_meV_per_atom | 4 [2, 7.5] |" in card
    assert "| MgO | same functional | 21.6 | 0.93 |" in card and "RMSE ω² 21.6 THz² (29.4 on the materials" in card
    assert "| MgO | yes | 100 of 100 | 488 ± 39.7 |" in card and "0.267 (weak)" in card
    assert "| zero-shot sets | `structures_per_s` | 9.5 |" in card and "| zero-shot sets | `hardware.batch_size` | 8 |" in card
    # a ratio whose CI lies above 1 is a limitation, with its CI
    assert "- `far-set`: energy_mae_meV_per_atom is 4× [2, 7.5] its value on the seen set `seen-set`." in card
    assert "stress_mae_GPa is" not in card  # its CI reaches below 1: not a limitation
    # the root-split card of a model in both keeps its split metrics and gains nothing it was not scored on
    assert "## Zero-shot" not in (project / "reports" / "chgnet_card.md").read_text()


def test_governance_report_and_strict_mode(project, capsys):
    assert run_report(project) == 0
    gov = (project / "reports/governance.md").read_text()
    status = {}
    for line in gov.splitlines():
        if line.startswith("| ") and "**" in line:
            cells = [c.strip() for c in line.strip("|").split("|")]
            status.setdefault(cells[0], set()).add(cells[1].strip("*"))
    source = json.loads((project / "metrics/mp20/chgnet.json").read_text())["strategies"]["loco"]["mean"]["test"]["f1"]
    assert status["loco_f1"] == {"PASS"} and f"{source:.4g}" in gov
    assert status["false_kill"] == {"FAIL"}
    assert status["false_kill_info"] == {"FAIL"} and "no (informational)" in gov
    # gates that match nothing that can exist: one configuration line each, not a row per file
    assert "coverage" not in status and "must_exist" not in status
    assert gov.count("gate `coverage`: **NOT-COMPUTED**") == 1
    assert gov.count("gate `must_exist`: **FAIL** — required metric not found") == 1
    # one section per model, short enough for one screen
    assert "## `chgnet`" in gov and "## `mace-tiny`" in gov
    assert all(len(section.splitlines()) <= 25 for section in gov.split("\n## ")[1:])
    assert (project / "reports/governance_detail.md").is_file()
    assert "**Overall: FAIL**" in gov
    assert "gate false_kill: FAIL" in capsys.readouterr().err
    assert run_report(project, "--strict") == 1


def test_outputs_are_deterministic(project):
    assert run_report(project) == 0
    first = {p: p.read_bytes() for p in sorted((project / "reports").rglob("*")) if p.is_file()}
    first[project / "metrics/mp20/summary.json"] = (project / "metrics/mp20/summary.json").read_bytes()
    assert any("site" in p.parts for p in first)
    assert run_report(project) == 0
    assert {p: p.read_bytes() for p in first} == first


def test_malformed_inputs_name_file_and_key(project):
    path = project / "metrics/mp20/chgnet.json"
    path.write_text(path.read_text()[:-20])
    with pytest.raises(SystemExit, match=r"chgnet\.json: malformed JSON at line"):
        run_report(project)
    bad = model_metrics("chgnet", 1)
    bad["strategies"]["loco"]["folds"] = [1, 2]
    path.write_text(json.dumps(bad))
    with pytest.raises(ReportError, match=r"chgnet\.json: key 'strategies\.loco\.folds' must be dict, got list"):
        build_reports(["mp20"], yaml.safe_load((project / "params.yaml").read_text()), project)
    (project / "models" / "broken.yaml").write_text("name: [unclosed\n")
    path.write_text(json.dumps(model_metrics("chgnet", 1)))
    with pytest.raises(ReportError, match=r"broken\.yaml: malformed YAML"):
        build_reports(["mp20"], yaml.safe_load((project / "params.yaml").read_text()), project)


def test_report_config_defaults_and_errors():
    assert "f1" in ReportConfig.from_params({}).headline
    with pytest.raises(ReportError, match="`report` must be a mapping"):
        ReportConfig.from_params({"report": [1]})
