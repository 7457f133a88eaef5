"""Fine-tuning pieces against hand-computed values: conformal quantiles and their guarantee,
the learning-curve fit, screening decisions, the head ensemble and one synthetic fold."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from xtalbench.finetune.conformal import SplitConformal, coverage_and_width
from xtalbench.finetune.learning_curve import (
    bootstrap_fit,
    fit_power_law,
    n_for_target,
    power_law,
)
from xtalbench.finetune.screening import (
    bootstrap_mae_ci,
    decisions,
    enrichment_factor,
    screening_metrics,
)


def test_conformal_half_width_is_the_textbook_order_statistic():
    residuals = np.array([0.5, -0.1, 0.3, -0.9, 0.2, 0.7, -0.4, 0.05, -0.6, 0.8])
    # n = 10, 90%: the ceil((n + 1) * 0.9) = 10th smallest |residual| = 0.9
    intervals, source = SplitConformal(0.9, min_cluster_size=0).fit(residuals).predict_interval(np.array([1.0, 2.0]))
    assert np.allclose(intervals, [[0.1, 1.9], [1.1, 2.9]])
    assert list(source) == ["global", "global"]
    # 80%: ceil(11 * 0.8) = 9th smallest |r| of (0.05 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9) = 0.8
    intervals, _ = SplitConformal(0.8, min_cluster_size=0).fit(residuals).predict_interval(np.array([0.0]))
    assert np.allclose(intervals, [[-0.8, 0.8]])


def test_conformal_finite_sample_guarantee_on_exchangeable_data():
    rng = np.random.default_rng(7)
    n_cal, trials, alpha = 39, 400, 0.1
    covered = []
    for _ in range(trials):
        cal = rng.standard_t(3, n_cal)  # heavy tails: the guarantee does not need normality
        test = rng.standard_t(3, 200)
        intervals, _ = SplitConformal(1 - alpha, 0).fit(cal).predict_interval(np.zeros(len(test)))
        covered.append(coverage_and_width(test, intervals)["coverage"])
    # 1 - alpha <= E[coverage] <= 1 - alpha + 1 / (n + 1) (Vovk; Lei et al. 2018); n = 39 → [0.9, 0.925]
    mean = float(np.mean(covered))
    se = float(np.std(covered) / math.sqrt(trials))
    assert 0.9 - 3 * se <= mean <= 0.925 + 3 * se


def test_mondrian_uses_cluster_quantile_and_falls_back_to_global():
    residuals = np.r_[np.full(20, 0.1), np.full(20, 1.0), [5.0, 5.0]]
    clusters = np.r_[np.zeros(20, int), np.ones(20, int), [2, 2]]
    conformal = SplitConformal(0.9, min_cluster_size=10).fit(residuals, clusters)
    intervals, source = conformal.predict_interval(np.zeros(4), np.array([0, 1, 2, 7]))
    assert np.allclose(intervals[0], [-0.1, 0.1]) and np.allclose(intervals[1], [-1.0, 1.0])
    # cluster 2 has 2 points (< 10) and cluster 7 none: the global quantile, ceil(43 * 0.9) = 39th of 42 → 1.0
    assert np.allclose(intervals[2], [-1.0, 1.0]) and np.allclose(intervals[3], [-1.0, 1.0])
    assert list(source) == ["cluster", "cluster", "global", "global"]


PEROVSKITE_N = np.array([25, 100, 500, 2000])
PEROVSKITE_MAE = np.array([52.0, 28.0, 14.0, 9.0])  # force MAE, meV/Å


def test_learning_curve_without_offset_is_the_log_log_line():
    x, y = np.log(PEROVSKITE_N), np.log(PEROVSKITE_MAE)
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()  # least squares by hand
    fit = fit_power_law(PEROVSKITE_N, PEROVSKITE_MAE, offset=False)
    assert fit["alpha"] == pytest.approx(-slope, rel=1e-12)
    assert fit["alpha"] == pytest.approx(0.4039, abs=1e-4)  # -(-4.4009 / 10.896), by hand
    assert fit["A"] == pytest.approx(math.exp(y.mean() - slope * x.mean()), rel=1e-12)


def test_learning_curve_with_offset_fits_better_and_inverts():
    free = fit_power_law(PEROVSKITE_N, PEROVSKITE_MAE, offset=True)
    plain = fit_power_law(PEROVSKITE_N, PEROVSKITE_MAE, offset=False)
    sse = lambda f: float(((power_law(PEROVSKITE_N, f["A"], f["alpha"], f["B"]) - PEROVSKITE_MAE) ** 2).sum())
    assert sse(free) < sse(plain)
    assert 0 <= free["B"] <= 9.0
    target = float(power_law(1000, free["A"], free["alpha"], free["B"]))
    assert n_for_target(free, target) == pytest.approx(1000, rel=1e-9)
    assert n_for_target(free, free["B"] - 1) is None
    flat = {"A": 26.7, "alpha": 0.0146, "B": 0.0}  # a nearly flat curve, as the readout head's on MP-20
    assert n_for_target(flat, 20.0) == pytest.approx((20.0 / 26.7) ** (-1 / 0.0146), rel=1e-9)  # ≈ 3.9e8
    assert n_for_target(flat, 1.0) is None  # e^225: beyond any dataset, and no OverflowError


def test_learning_curve_bootstrap_brackets_the_fit():
    rng = np.random.default_rng(0)
    groups = np.array([f"m{i}" for i in range(300)])
    errors = [np.abs(rng.normal(0, m * math.sqrt(math.pi / 2), 300)) for m in PEROVSKITE_MAE]
    out = bootstrap_fit(PEROVSKITE_N, errors, [groups] * 4, n_bootstrap=200, seed=1, target=20.0, offset=False)
    lo, hi = out["ci95"]["alpha"]
    assert lo <= out["fit"]["alpha"] <= hi and hi - lo < 0.2


def test_screening_decisions_and_rates_by_hand():
    threshold = 0.0
    e_hull_true = np.array([-0.05, -0.02, 0.0, 0.03, 0.10, 0.20])  # stable: the first three
    intervals = np.array([[-0.09, -0.01], [-0.04, 0.02], [0.01, 0.05], [-0.01, 0.04], [0.05, 0.15], [-0.10, -0.02]])
    assert list(decisions(intervals, threshold)) == ["KEEP", "MAYBE", "KILL", "MAYBE", "KILL", "KEEP"]
    e_pred = intervals.mean(1)
    m = screening_metrics(e_hull_true, e_pred, e_hull_true, e_pred, intervals, threshold, top_k=2)
    assert m["keep_precision"] == pytest.approx(1 / 2)  # KEEP = {0 stable, 5 unstable}
    assert m["keep_recall"] == pytest.approx(1 / 3)
    assert m["kill_precision"] == pytest.approx(1 / 2)  # KILL = {2 stable, 4 unstable}
    assert m["false_kill_rate"] == pytest.approx(1 / 3)
    assert m["coverage"] == pytest.approx(4 / 6)  # rows 2 and 5 miss their truth
    assert m["n_keep"] == 2 and m["n_maybe"] == 2 and m["n_kill"] == 2
    # predicted order: 5 (-0.06), 0 (-0.05), 1, 3, 2, 4 → top 2 hold one stable material
    assert m["stable_fraction_top2"] == pytest.approx(0.5)


def test_enrichment_factor_by_hand():
    stable = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0], bool)  # prevalence 0.2
    assert enrichment_factor(stable, np.arange(10), 0.1) == pytest.approx(1.0 / 0.2)
    assert enrichment_factor(stable, np.arange(10)[::-1], 0.2) == pytest.approx(0.0)


def test_bootstrap_ci_is_material_level():
    errors = np.array([1.0, 1.0, 1.0, 3.0])
    same = bootstrap_mae_ci(errors, np.array(["a", "a", "a", "a"]), 200, 0)
    assert same == [1.5, 1.5]  # one material: every draw is the whole set
    ci = bootstrap_mae_ci(errors, np.array(["a", "b", "c", "d"]), 2000, 0)
    assert 1.0 <= ci[0] < 1.5 < ci[1] <= 3.0


def test_head_ensemble_is_seeded_and_learns_a_linear_map():
    pytest.importorskip("torch")
    from xtalbench.finetune.heads import HeadEnsemble

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = 2 * x[:, 0] - x[:, 1]
    kwargs = {"members": 2, "hidden": 16, "max_epochs": 150, "patience": 20, "batch_size": 32, "seed": 3}
    a = HeadEnsemble(**kwargs).fit(x[:200], y[:200], x[200:250], y[200:250])
    b = HeadEnsemble(**kwargs).fit(x[:200], y[:200], x[200:250], y[200:250])
    mean_a, spread_a = a.predict(x[250:])
    mean_b, _ = b.predict(x[250:])
    assert np.array_equal(mean_a, mean_b)
    assert np.mean(np.abs(mean_a - y[250:])) < 0.1 * np.std(y)
    assert np.all(spread_a > 0)  # two seeds, two different members


def _synthetic_materials(n: int = 240, seed: int = 0):
    from xtalbench.finetune.stage import Materials

    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, 6)).astype(np.float32)
    e_form = rng.normal(-1.0, 0.5, n)
    bias = 0.3 * feats[:, 0]  # the zero-shot error is a learnable function of the features
    table = pd.DataFrame({
        "material_id": [f"m{i:03d}" for i in range(n)], "frame_id": [f"m{i:03d}" for i in range(n)],
        "e_form": e_form, "e_hull": np.abs(rng.normal(0, 0.05, n)) * (rng.random(n) > 0.4),
        "e_form_zero_shot": e_form + bias, "cluster": rng.integers(0, 3, n),
    })
    table["e_d"] = table["e_hull"]
    return Materials(table=table, features=feats, soap=rng.normal(size=(n, 5)))


def test_run_fold_fine_tunes_below_zero_shot_with_calibrated_intervals():
    pytest.importorskip("torch")
    from xtalbench.finetune.params import FinetuneParams
    from xtalbench.finetune.stage import run_fold

    m = _synthetic_materials()
    ids = m.table["material_id"].to_numpy()
    roles = {"train": ids[:140], "val": ids[140:200], "test": ids[200:]}
    p = FinetuneParams(members=2, head={"hidden": 16, "max_epochs": 200, "patience": 20}, n_bootstrap=50, conformal={"min_cluster_size": 0})
    metrics, predictions = run_fold(m, roles, p, seed=0)
    test = metrics["test"]
    assert test["finetuned"]["e_form_mae_meV_per_atom"] < 0.5 * test["zero_shot"]["e_form_mae_meV_per_atom"]
    assert test["finetuned"]["coverage"] >= 0.75  # exchangeable split, 90% target, 40 test points
    assert metrics["n_stop"] + metrics["n_calibration"] == 60
    assert set(predictions["role"]) == {"val", "test"} and predictions["novelty"].notna().all()
    assert len(test["error_vs_novelty"]) == p.novelty_bins


def test_finetune_params_refuse_bad_values(tmp_path, capsys):
    import yaml

    from xtalbench import cli

    params = tmp_path / "params.yaml"
    datasets = {"mp20": {"source": "shared", "path": "x.parquet"}}  # configured: the refusal must come from `finetune`
    params.write_text(yaml.safe_dump({"datasets": datasets, "finetune": {"members": 0, "lerning_curve": {}}}))
    assert cli.main(["finetune", "mp20", "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert "finetune.members" in err and "lerning_curve" in err


def _frame(symbols, cell, positions, energy, stress_voigt, frame_id="f0"):
    from ase import Atoms

    atoms = Atoms(symbols, cell=cell, positions=positions, pbc=True)
    n = len(atoms)
    row = {
        "frame_id": frame_id, "material_id": frame_id, "numbers": atoms.numbers.tolist(),
        "positions": atoms.positions.ravel().tolist(), "lattice": np.asarray(atoms.cell).ravel().tolist(), "pbc": [True] * 3,
        "energy": energy, "forces": np.zeros(3 * n).tolist(), "stress": list(stress_voigt),
    }
    return row


def test_chgnet_labels_convert_stress_to_vasp_kbar_and_energy_per_atom():
    from ase import units

    from xtalbench.finetune.trainer import chgnet_labels

    gpa = units.GPa
    # 1 GPa tensile along x (ASE sign: positive = tensile) and 0.5 GPa shear yz
    row = _frame("Si2", np.eye(3) * 5.43, [[0, 0, 0], [1.36, 1.36, 1.36]], -10.8, [1 * gpa, 0, 0, 0.5 * gpa, 0, 0])
    structures, energies, _, stresses = chgnet_labels([row], mp2020_corrected=False, references="unused")
    assert energies[0] == pytest.approx(-5.4)  # eV per atom, no correction asked
    s = np.asarray(stresses[0])
    assert s[0, 0] == pytest.approx(-10.0)  # VASP kBar: compressive positive, 1 GPa = 10 kBar
    assert s[1, 2] == pytest.approx(-5.0) and s[2, 1] == pytest.approx(-5.0)
    assert len(structures[0]) == 2


def test_chgnet_trainer_member_runs_and_keeps_the_best_epoch():
    pytest.importorskip("chgnet")
    from xtalbench.finetune.trainer import chgnet_labels, finetune_member, predict_efs

    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        a = 5.43 * (1 + 0.01 * i)
        pos = np.array([[0, 0, 0], [a / 4, a / 4, a / 4]]) + rng.normal(0, 0.02, (2, 3))
        rows.append(_frame("Si2", np.eye(3) * a, pos, -10.8 + 0.05 * i, np.zeros(6), frame_id=f"f{i}"))
    labels = chgnet_labels(rows, mp2020_corrected=False, references="unused")
    train = tuple(x[:4] for x in labels)
    val = tuple(x[4:] for x in labels)
    model = finetune_member(train, val, seed=0, epochs=1, lr=1e-3, trainable=["mlp"], batch_size=2, device="cpu")
    pred = predict_efs(model, labels[0][:2])
    assert len(pred["e"]) == 2 and pred["f"][0].shape == (2, 3) and pred["s"][0].shape == (3, 3)
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(not n.startswith("mlp.") for n in frozen)
