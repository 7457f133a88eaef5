"""Phonons: an analytic spring crystal through the model path, the real DFT references, and the stage with EMT."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from xtalbench.core.errors import InputError, XtalbenchError
from xtalbench.dynamics.harmonic import HarmonicPredictor
from xtalbench.dynamics.phonons import compare_material, model_phonons, phonopy_to_atoms
from xtalbench.dynamics.reference import (
    functional_from_text,
    load_reference,
    read_functional,
)

ROOT = Path(__file__).resolve().parents[1]
REFS = ROOT.parent / "shared" / "data" / "phonopy-examples"
needs_refs = pytest.mark.skipif(not (REFS / "MgO" / "phonopy_disp.yaml").exists(), reason="../shared/data/phonopy-examples missing")

# sqrt(eV / (Å² amu)) / 2π in THz, from CODATA constants (independent of phonopy's factor table)
THZ = np.sqrt(1.602176634e-19 / 1.66053906660e-27) / 1e-10 / (2 * np.pi) / 1e12
K, MASS, A, N = 2.0, 40.0, 2.5, 4  # spring eV/Å², mass amu, lattice Å, supercell N×N×N


def spring_fc(atoms, k: float) -> np.ndarray:
    """Nearest-neighbour springs along the bonds of a simple cubic supercell: Φ_ij = −k e eᵀ, Φ_ii = Σ k e eᵀ."""
    n = len(atoms)
    fc = np.zeros((n, n, 3, 3))
    cell = atoms.cell.array
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            d = atoms.positions[j] - atoms.positions[i]
            frac = d @ np.linalg.inv(cell)
            d = (frac - np.round(frac)) @ cell
            if abs(np.linalg.norm(d) - A) < 1e-6:
                e = d / A
                fc[i, j] -= k * np.outer(e, e)
                fc[i, i] += k * np.outer(e, e)
    return fc


@pytest.fixture(scope="module")
def spring_crystal():
    """A phonopy 'reference' of the spring crystal (forces from the exact harmonic model)."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    unit = PhonopyAtoms(symbols=["Ar"], cell=np.eye(3) * A, scaled_positions=[[0, 0, 0]], masses=[MASS])
    ref = Phonopy(unit, supercell_matrix=np.eye(3, dtype=int) * N, log_level=0)
    ref.generate_displacements(distance=0.03)
    supercell = phonopy_to_atoms(ref.supercell)
    fc = spring_fc(supercell, K)
    exact = HarmonicPredictor(supercell, fc)
    ref.forces = np.asarray(exact.predict([_row(phonopy_to_atoms(c)) for c in ref.supercells_with_displacements])["forces"])
    ref.produce_force_constants(calculate_full_force_constants=True, show_drift=False)
    return ref, supercell, fc


def _row(atoms) -> dict:
    from xtalbench.dynamics.calculator import atoms_to_row

    return atoms_to_row(atoms)


def analytic(q) -> np.ndarray:
    """ν_α(q) = THz·sqrt((2k/m)(1 − cos 2π q_α)), one branch per Cartesian direction, sorted."""
    return np.sort(THZ * np.sqrt(2 * K / MASS * (1 - np.cos(2 * np.pi * np.asarray(q)))))


class Counting:
    def __init__(self, inner):
        self.inner, self.calls, self.structures = inner, 0, 0

    def predict(self, frames, batch_size=None):
        self.calls += 1
        self.structures += len(frames)
        return self.inner.predict(frames, batch_size)


def test_model_phonons_match_the_analytic_spring_dispersion_with_one_predict_call(spring_crystal):
    ref, supercell, fc = spring_crystal
    model = Counting(HarmonicPredictor(supercell, fc))
    result = model_phonons(ref, model)
    assert model.calls == 1 and model.structures == len(ref.displacements) + 1 == result.n_structures
    for q in ([0.5, 0, 0], [0.25, 0.1, 0.4], [0.5, 0.5, 0.5], [0.125, 0.375, 0.0]):
        got = np.sort(result.phonon.run_qpoints([q]).frequencies[0])
        assert got == pytest.approx(analytic(q), abs=1e-6)


def test_errors_of_a_stiffer_model_are_the_hand_derived_ones(spring_crystal):
    ref, supercell, fc = spring_crystal
    same, _ = compare_material(ref, model_phonons(ref, HarmonicPredictor(supercell, fc)), [8, 8, 8], 11, 0.1, 0.05)
    assert same["rmse_omega2_THz2"] == pytest.approx(0, abs=1e-8)
    assert same["rmse_group_velocity_THz_A"] == pytest.approx(0, abs=1e-8)
    assert same["imaginary_mesh"]["count"] == 0 and same["mesh_points_full"] == 512
    stiff, _ = compare_material(ref, model_phonons(ref, HarmonicPredictor(supercell, 1.21 * fc)), [8, 8, 8], 11, 0.1, 0.05)
    stiffer, _ = compare_material(ref, model_phonons(ref, HarmonicPredictor(supercell, 1.44 * fc)), [8, 8, 8], 11, 0.1, 0.05)
    # ω²_model = 1.21 ω²: RMSE = 0.21 sqrt(<ω⁴>), and on a grid of ≥ 3 points <(1 − cos)²> = 3/2
    expected = 0.21 * THZ**2 * (2 * K / MASS) * np.sqrt(1.5)
    assert stiff["rmse_omega2_THz2"] == pytest.approx(expected, rel=1e-6)
    # ν scales by 1.1: the largest error is 0.1 × the highest frequency, at q_α = 1/2
    assert stiff["max_frequency_error_THz"] == pytest.approx(0.1 * THZ * np.sqrt(4 * K / MASS), rel=1e-6)
    assert 0.5 in [abs(x) for x in stiff["max_frequency_error_at"]["qpoint"]]
    # v scales like ν: errors 0.1 v and 0.2 v
    assert stiff["rmse_group_velocity_THz_A"] / stiffer["rmse_group_velocity_THz_A"] == pytest.approx(0.5, rel=1e-6)


def test_an_unstable_model_has_its_imaginary_modes_counted(spring_crystal):
    ref, supercell, fc = spring_crystal
    metrics, _ = compare_material(ref, model_phonons(ref, HarmonicPredictor(supercell, -fc)), [8, 8, 8], 11, 0.1, 0.05)
    # every mode with q_α ≠ 0 is imaginary: 512·3 − 3·64 (modes with q_α = 0 stay at zero)
    assert metrics["imaginary_mesh"]["count"] == 512 * 3 - 3 * 64
    assert metrics["reference_imaginary_mesh"]["count"] == 0
    assert metrics["imaginary_band"]["count"] > 0 and metrics["imaginary_mesh"]["lowest_THz"] < 0


def test_functional_tags_are_read_like_vasp_does():
    incar = '<incar><i type="string" name="GGA">{}</i></incar>'
    pbe_potcar = "<c>  PAW_PBE Si 05Jan2001 </c>"
    assert functional_from_text(incar.format("PS") + pbe_potcar)[0] == "PBEsol"
    assert functional_from_text(incar.format("PE"))[0] == "PBE"
    assert functional_from_text("<incar></incar>" + pbe_potcar)[0] == "PBE"
    assert functional_from_text("<incar></incar><c> PAW Si 05Jan2001 </c>")[0] == "LDA"
    assert functional_from_text('<incar><i name="METAGGA">R2SCAN</i></incar>')[0] == "R2SCAN"
    with pytest.raises(InputError, match="GGA = 'XX'"):
        functional_from_text(incar.format("XX"), "x/vasprun.xml")
    with pytest.raises(InputError, match="cannot tell"):
        functional_from_text("<incar></incar>", "x/vasprun.xml")


@needs_refs
def test_real_references_record_their_functional():
    # read from the vaspruns: GGA = PS in Al2O3, Cr, SnO2; Si's vasprun has no GGA tag and PAW_PBE potentials
    assert read_functional(REFS / "Cr").name == "PBEsol"
    assert read_functional(REFS / "Al2O3").name == "PBEsol"
    assert read_functional(REFS / "Si").name == "PBE"
    assert read_functional(REFS / "MgO").name == "PBE"


@needs_refs
def test_si_forces_from_vasprun_and_mgo_nac():
    si = load_reference(REFS / "Si")  # no FORCE_SETS: forces from vasprun.xml
    gamma = np.sort(si.run_qpoints([[0, 0, 0]]).frequencies[0])
    assert np.abs(gamma[:3]).max() < 0.1 and 14.5 < gamma[-1] < 16.0  # Si Γ optical mode, ~15.3 THz in PBE
    mgo = load_reference(REFS / "MgO")
    assert mgo.nac_params is not None
    with pytest.raises(InputError, match="phonopy_disp.yaml"):
        load_reference(REFS)


@needs_refs
def test_phonon_stage_with_emt_on_al2o3(tmp_path, monkeypatch):
    from xtalbench.dynamics.params import DynamicsParams
    from xtalbench.dynamics.stage import run_phonons

    (tmp_path / "models").mkdir()
    shutil.copy(ROOT / "models" / "emt.yaml", tmp_path / "models" / "emt.yaml")
    monkeypatch.chdir(tmp_path)
    from xtalbench.models.base import Predictor

    calls: list[int] = []  # structures per predict call, counted outside the code under test
    predict = Predictor.predict
    monkeypatch.setattr(Predictor, "predict", lambda self, frames, *a, **k: calls.append(len(frames)) or predict(self, frames, *a, **k))
    params = DynamicsParams(models=["emt"], data=str(REFS), device="cpu", phonons={"materials": ["Al2O3"], "mesh": [3, 3, 3], "band_npoints": 5})
    result = run_phonons(params, progress=False)
    entry = result["models"]["emt"]["materials"]["Al2O3"]
    assert entry["functional_reference"] == "PBEsol" and entry["like_with_like"] is False
    # one batched call: the undisplaced supercell and each of phonopy's displaced ones
    assert calls == [1 + result["materials"]["Al2O3"]["displacements"]]
    assert entry["predict_calls"] == len(calls) and entry["structures_predicted"] == calls[0]
    assert entry["nac"] is True
    written = json.loads((tmp_path / "metrics/dynamics/phonons.json").read_text())
    assert written["models"]["emt"]["median"]["rmse_omega2_THz2"] == pytest.approx(entry["rmse_omega2_THz2"])
    assert (tmp_path / "plots/dynamics/phonons/emt/Al2O3_dispersion.png").stat().st_size > 1000
    bands = (tmp_path / "plots/dynamics/phonons/emt/bands.csv").read_text().splitlines()
    assert bands[0].startswith("material,segment,distance,band") and len(bands) > 30 * 5
    assert not list(tmp_path.rglob("*.xtalbench-tmp-*"))
    with pytest.raises(XtalbenchError, match="no such model|nowhere"):
        run_phonons(params.model_copy(update={"models": ["nowhere"]}), progress=False)
    unknown = params.model_copy(update={"phonons": params.phonons.model_copy(update={"materials": ["Unobtainium"]})})
    with pytest.raises(XtalbenchError, match="'Unobtainium' has no .*phonopy_disp.yaml"):
        run_phonons(unknown, progress=False)


def test_every_dynamics_model_is_a_dep_of_both_stages():
    import yaml

    from xtalbench.core.params import parse_section
    from xtalbench.dynamics.params import DynamicsParams

    params = parse_section(DynamicsParams, yaml.safe_load((ROOT / "params.yaml").read_text()), "dynamics")
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in ("phonons", "md"):
        deps = stages[stage]["deps"]
        assert [m for m in params.models if f"models/{m}.yaml" not in deps] == [], stage
        assert "${dynamics.data}" in deps and params.data == "../shared/data/phonopy-examples"


def test_cli_turns_bad_params_into_exit_2(tmp_path, capsys):
    from xtalbench.cli import main

    bad = tmp_path / "params.yaml"
    bad.write_text(f"dynamics:\n  data: {tmp_path}\n  phonons:\n    materials: [Unobtainium]\n")
    assert main(["phonons", "--params", str(bad)]) == 2
    assert "Unobtainium" in capsys.readouterr().err
    bad.write_text("dynamics:\n  md:\n    steps: 1\n")
    assert main(["md", "--params", str(bad)]) == 2
    assert "dynamics.md.steps" in capsys.readouterr().err
