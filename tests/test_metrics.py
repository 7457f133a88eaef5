"""Error metrics on hand-computed arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xtalbench.evaluate import metrics as M

ELEMENTARY_CHARGE = 1.602176634e-19  # C (exact, SI 2019): 1 eV/Å³ = e J / 1e-30 m³


def test_mae_rmse_hand_computed():
    pred, true = [1.0, 2.0, 3.0], [1.0, 3.0, 5.0]  # errors 0, -1, -2
    assert M.mae(pred, true) == pytest.approx(1.0)
    assert M.rmse(pred, true) == pytest.approx(math.sqrt(5 / 3))
    assert math.isnan(M.mae([], []))


def test_force_cosine_ignores_zero_vectors():
    pred = np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 0], [1.0, 1.0, 0]])
    true = np.array([[2.0, 0, 0], [0, -1.0, 0], [1.0, 1.0, 1.0], [0, 0, 0]])
    cos = M.cosine_per_atom(pred, true)
    # atom 2 has a zero prediction, atom 3 a zero DFT force: both left out
    assert cos.tolist() == pytest.approx([1.0, -1.0])
    assert M.force_cosine(pred, true) == pytest.approx(0.0)
    assert math.isnan(M.force_cosine(np.zeros((2, 3)), np.ones((2, 3))))
    # 45 degrees
    assert M.force_cosine([[1.0, 1.0, 0]], [[1.0, 0, 0]]) == pytest.approx(1 / math.sqrt(2))


def test_stress_unit_conversion():
    gpa_per_ev_a3 = ELEMENTARY_CHARGE / 1e-30 / 1e9
    assert M.stress_to_gpa([1.0])[0] == pytest.approx(gpa_per_ev_a3, rel=1e-6)
    stats = M.row_stats(
        nsites=1,
        energy_pred=None,
        energy_true=None,
        forces_pred=None,
        forces_true=None,
        stress_pred=[0.01, 0, 0, 0, 0, -0.02],
        stress_true=[0.0] * 6,
    )
    agg = M.aggregate({k: np.array([v]) for k, v in stats.items()})
    assert agg["stress_mae_GPa"] == pytest.approx(0.03 * gpa_per_ev_a3 / 6, rel=1e-6)


def test_energy_and_force_errors_aggregate_over_rows():
    rows = [
        M.row_stats(nsites=2, energy_pred=-10.0, energy_true=-10.4, forces_pred=[1, 0, 0, 0, 0, 0], forces_true=[0, 0, 0, 0, 0, 0.5], stress_pred=None, stress_true=None),
        M.row_stats(nsites=4, energy_pred=-20.4, energy_true=-20.0, forces_pred=None, forces_true=[0] * 12, stress_pred=None, stress_true=None),
    ]
    stats = {k: np.array([r[k] for r in rows]) for k in M.STAT_COLUMNS}
    agg = M.aggregate(stats)
    # per-atom energy errors: +0.2 and -0.1 eV/atom
    assert agg["energy_mae_meV_per_atom"] == pytest.approx(150.0)
    assert agg["energy_rmse_meV_per_atom"] == pytest.approx(1000 * math.sqrt((0.04 + 0.01) / 2))
    # forces only on the first frame: |1| + |0.5| over 6 components
    assert agg["force_mae_meV_per_A"] == pytest.approx(250.0)
    assert agg["force_rmse_meV_per_A"] == pytest.approx(1000 * math.sqrt(1.25 / 6))
    # atom 0: pred (1,0,0) vs zero DFT force → ignored; atom 1: pred zero → ignored
    assert agg["force_cosine"] is None
    assert agg["stress_mae_GPa"] is None and agg["e_form_mae_meV_per_atom"] is None


def test_e_form_errors():
    rows = [M.row_stats(nsites=3, energy_pred=None, energy_true=None, forces_pred=None, forces_true=None, stress_pred=None, stress_true=None, e_form_pred=e, e_form_true=t) for e, t in [(-1.0, -1.05), (-2.0, -1.9), (np.nan, -1.0)]]
    agg = M.aggregate({k: np.array([r[k] for r in rows]) for k in M.STAT_COLUMNS})
    assert agg["e_form_mae_meV_per_atom"] == pytest.approx(75.0)  # NaN prediction skipped


def test_shape_mismatch_names_record_and_field():
    with pytest.raises(ValueError, match=r"record 'frame-7', field 'forces'"):
        M.row_stats(nsites=2, energy_pred=None, energy_true=None, forces_pred=[0.0] * 3, forces_true=[0.0] * 6, stress_pred=None, stress_true=None, record="frame-7")
    with pytest.raises(ValueError, match=r"field 'stress'"):
        M.row_stats(nsites=2, energy_pred=None, energy_true=None, forces_pred=None, forces_true=None, stress_pred=[0.0] * 9, stress_true=[0.0] * 6)
