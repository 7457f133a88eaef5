"""Dimer-curve metrics against hand-computed values on Morse curves, and the stage end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xtalbench.diatomics.curves import (
    CurveError,
    curve_metrics,
    equilibrium,
    local_minima,
    summary,
)

ROOT = Path(__file__).resolve().parents[1]
CURVES = ROOT.parent / "shared" / "data" / "diatomics" / "diatomics-dft.json.gz"
R = np.geomspace(0.6, 6.0, 50)  # like the DFT grids: dense at short range, up to 6 Å


def morse(r, depth=2.0, a=1.5, r_e=1.2):
    return depth * (1 - np.exp(-a * (r - r_e))) ** 2 - depth


def morse_force(r, depth=2.0, a=1.5, r_e=1.2):
    """-dE/dr on the outer atom."""
    x = np.exp(-a * (r - r_e))
    return -2 * depth * a * (1 - x) * x


def test_equilibrium_and_well_depth_of_a_shifted_deeper_morse():
    out = curve_metrics(R, morse(R, depth=2.4, r_e=1.3), morse(R), morse_force(R, depth=2.4, r_e=1.3))
    assert out["r_eq_dft_A"] == pytest.approx(1.2, abs=0.01) and out["r_eq_error_A"] == pytest.approx(0.1, abs=0.015)
    tail = lambda depth, r_e: depth * (1 - np.exp(-1.5 * (6.0 - r_e))) ** 2  # noqa: E731  E(6 Å) − E(r_e), by hand
    assert out["well_depth_dft_eV"] == pytest.approx(tail(2.0, 1.2), rel=0.01)
    assert out["well_depth_error_eV"] == pytest.approx(tail(2.4, 1.3) - tail(2.0, 1.2), abs=0.02)
    assert out["spurious_minima"] == 0 and out["minima"] == out["minima_dft"] == 1
    assert out["repulsive_wall_fraction"] == 1.0 and out["short_range_energy_eV"] > 0


def test_curve_rmse_ignores_constant_offsets_and_sees_a_ramp():
    e = morse(R)
    assert curve_metrics(R, e + 3.7, e)["curve_rmse_eV"] == pytest.approx(0.0, abs=1e-12)
    ramp = curve_metrics(R, e + 0.1 * R, e, max_energy=None)
    assert ramp["curve_rmse_eV"] == pytest.approx(0.1 * np.sqrt(np.mean((R - 6.0) ** 2)))  # relative to E(6 Å)
    capped = curve_metrics(R, e + 0.1 * R, e, max_energy=0.5)
    keep = e - e[-1] <= 0.5
    assert capped["curve_rmse_capped_eV"] == pytest.approx(0.1 * np.sqrt(np.mean((R[keep] - 6.0) ** 2)))


def test_spurious_minimum_and_missing_repulsion():
    e = morse(R)
    bump = e - 0.3 * np.exp(-((R - 3.5) ** 2) / 0.05)  # a second well at 3.5 Å, 0.3 eV deep
    out = curve_metrics(R, bump, e)
    assert out["spurious_minima"] == 1 and len(local_minima(bump - bump[-1], 0.01)) == 2
    assert len(local_minima(bump - bump[-1], 0.5)) == 1  # below the tolerance, the bump is noise
    collapsed = np.where(R < 1.0, -5.0 * (1.0 - R), e)  # energy falls towards r → 0 below 1 Å
    out = curve_metrics(R, collapsed, e)
    wall = R[1:] <= out["r_eq_dft_A"]
    falls = np.diff(collapsed)[wall] < 0
    assert out["repulsive_wall_fraction"] == pytest.approx(falls.mean()) and out["repulsive_wall_fraction"] < 1.0
    assert out["short_range_energy_eV"] < 0


def test_energy_force_consistency():
    e = morse(R)
    good = curve_metrics(R, e, e, morse_force(R))["force_consistency_mae_eV_per_A"]
    bad = curve_metrics(R, e, e, -morse_force(R))["force_consistency_mae_eV_per_A"]
    capped = curve_metrics(R, e, e, morse_force(R) + 0.2, max_energy=1.0)["force_consistency_capped_mae_eV_per_A"]
    assert capped == pytest.approx(0.2, abs=0.03)  # a constant 0.2 eV/Å force error, where the curve is gentle
    assert good < 0.05  # finite-difference error only
    assert bad == pytest.approx(2 * np.mean(np.abs(morse_force(R))), rel=0.05)


def test_parabola_refinement_and_bad_input():
    r = np.array([1.0, 1.1, 1.2, 1.3])
    assert equilibrium(r, (r - 1.17) ** 2)[0] == pytest.approx(1.17)
    with pytest.raises(CurveError, match="pair 'X-X', field 'distances'"):
        curve_metrics([1.0, 0.9, 1.1], [0, 0, 0], [0, 0, 0], pair="X-X")
    s = summary({"A": curve_metrics(R, morse(R, r_e=1.3), morse(R)), "B": curve_metrics(R, morse(R), morse(R))})
    assert s["pairs"] == 2 and s["r_eq_mae_A"] == pytest.approx(0.05, abs=0.01) and s["pairs_with_spurious_minima"] == 0


def test_stage_with_a_model_that_returns_the_dft_curves(tmp_path, monkeypatch):
    from xtalbench.diatomics.stage import diatomics, read_curves
    from xtalbench.models.base import Predictor

    curves = read_curves(CURVES, "PBE")

    class Lookup(Predictor):
        batched = True

        def _predict_batch(self, rows):
            energy, forces = [], []
            for row in rows:
                pair, i = row["frame_id"].rsplit("-", 1)
                p = np.asarray(row["positions"]).reshape(2, 3)
                assert np.linalg.norm(p[1] - p[0]) == pytest.approx(curves[pair]["distances"][int(i)])
                energy.append(curves[pair]["energies"][int(i)] + 1.0)  # an atomic-reference offset drops out
                forces.append(np.asarray(curves[pair]["forces"][int(i)]))
            return {"energy": np.array(energy), "forces": forces, "stress": np.zeros((len(rows), 6))}

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "lookup.yaml").write_text("name: lookup\nkind: ase\ncalculator: ase.calculators.emt.EMT\nlicence: MIT\n"
                                                      "training_set: {name: none, database: none}\n")  # fmt: skip
    params = {"diatomics": {"path": str(CURVES), "pairs": ["H-H", "O-O", "Fe-Fe"]}}
    metrics = diatomics("lookup", params, models_dir="models", progress=False, predictor=Lookup("lookup", progress=False))
    assert set(metrics["pairs"]) == {"H-H", "O-O", "Fe-Fe"}
    for pair in metrics["pairs"].values():
        assert pair["curve_rmse_eV"] == pytest.approx(0.0, abs=1e-9) and pair["r_eq_error_A"] == 0 and pair["spurious_minima"] == 0
    assert metrics["pairs"]["H-H"]["r_eq_dft_A"] == pytest.approx(0.75, abs=0.02)  # H2 bond length, PBE
    assert metrics["pairs"]["H-H"]["force_consistency_mae_eV_per_A"] < 0.5  # DFT forces vs its own curve's slope
    assert (tmp_path / "metrics" / "diatomics" / "lookup.json").exists()


def test_a_pair_the_model_cannot_take_is_left_out(tmp_path, monkeypatch):
    from xtalbench.diatomics.stage import diatomics
    from xtalbench.models.base import Predictor

    class Morse(Predictor):
        batched = True

        def _predict_batch(self, rows):
            if any(r["frame_id"].startswith("O-O-") for r in rows):
                raise ValueError("isolated atom")
            r = np.array([np.linalg.norm(np.subtract(row["positions"][3:], row["positions"][:3])) for row in rows])
            f = morse_force(r)
            forces = [np.array([[-fi, 0, 0], [fi, 0, 0]]) for fi in f]
            return {"energy": morse(r), "forces": forces, "stress": np.zeros((len(rows), 6))}

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.yaml").write_text("name: m\nkind: ase\ncalculator: ase.calculators.emt.EMT\nlicence: MIT\n"
                                                 "training_set: {name: none, database: none}\n")  # fmt: skip
    params = {"diatomics": {"path": str(CURVES), "pairs": ["H-H", "O-O"]}}
    metrics = diatomics("m", params, models_dir="models", progress=False, predictor=Morse("m", progress=False))
    assert metrics["model_failures"] == {"O-O": "ValueError: isolated atom"} and metrics["skipped_pairs"] == ["O-O"]
    assert metrics["pairs"]["H-H"]["force_consistency_mae_eV_per_A"] < 0.1  # analytic Morse forces are its curve's slope
