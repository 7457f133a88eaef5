"""MD: failures of deliberately broken calculators are reported (not raised), the equilibration rule, harmonic MD."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes

from xtalbench.dynamics.calculator import PredictorCalculator
from xtalbench.dynamics.md import MdResult, run_md, summarize
from xtalbench.dynamics.params import MdParams

ROOT = Path(__file__).resolve().parents[1]
REFS = ROOT.parent / "shared" / "data" / "phonopy-examples"
PARAMS = MdParams(steps=20, temperature_K=300.0, timestep_fs=1.0, seed=1)


def crystal() -> Atoms:
    return bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))


class Broken(Calculator):
    """EMT-free toy: Einstein springs around the start, then a deliberate fault after `after` calls."""

    implemented_properties = ["energy", "forces"]  # noqa: RUF012

    def __init__(self, fault: str, after: int = 3):
        super().__init__()
        self.fault, self.after, self.calls, self.sites = fault, after, 0, None

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self.sites is None:
            self.sites = self.atoms.positions.copy()
        self.calls += 1
        u = self.atoms.positions - self.sites
        forces, energy = -1.0 * u, 0.5 * float((u * u).sum())
        late = self.calls > self.after
        if late and self.fault == "collapse":  # pull atom 1 hard onto atom 0
            d = self.atoms.positions[0] - self.atoms.positions[1]
            forces[1] += 500.0 * d / np.linalg.norm(d)
        if late and self.fault == "blowup":
            energy += 10.0 * len(self.atoms) * (self.calls - self.after)
        if late and self.fault == "nan":
            forces[0, 0] = np.nan
        if late and self.fault == "raise":
            raise RuntimeError("model exploded")
        if late and self.fault == "escape":  # one atom is shot out of its site
            forces[2] += [2000.0, 0, 0]
        self.results = {"energy": energy, "forces": forces}


@pytest.mark.parametrize(
    ("fault", "kind"),
    [("collapse", "close_atoms"), ("blowup", "energy_blowup"), ("nan", "non_finite"), ("raise", "calculator_error"), ("escape", "lost_periodicity")],
)
def test_broken_calculators_are_reported_not_raised(fault, kind):
    result = run_md(crystal(), Broken(fault), PARAMS)
    assert result.failure is not None and result.failure["kind"] == kind, result.failure
    assert result.summary["completed"] is False and result.summary["equilibration"]["equilibrated"] is False
    assert 0 < result.failure["step"] < PARAMS.steps
    assert len(result.frames) == len(result.step) <= result.failure["step"] + 1
    if fault == "raise":
        assert "model exploded" in result.failure["detail"]


def test_a_healthy_run_completes_with_consistent_energies():
    result = run_md(crystal(), Broken("none"), PARAMS)
    assert result.failure is None and result.summary["completed"]
    assert len(result.frames) == PARAMS.steps + 1 and list(result.step) == list(range(PARAMS.steps + 1))
    n = len(crystal())
    # ASE's kinetic temperature with the centre of mass fixed: T = 2 E_kin / ((3N − 3) k_B)
    assert result.temperature == pytest.approx(2 * result.ekin / ((3 * n - 3) * units.kB), rel=1e-9)
    assert result.frames[5].get_potential_energy() == pytest.approx(result.epot[5])
    assert result.summary["steps_per_s"] > 0 and result.summary["atom_steps_per_s"] == pytest.approx(result.summary["steps_per_s"] * n)


def _synthetic(temperature: np.ndarray, epot: np.ndarray, ekin: np.ndarray | None = None, n: int = 10) -> MdResult:
    t = np.arange(len(temperature)) * 2.0
    return MdResult(frames=[], step=np.arange(len(t)), time_fs=t, epot=epot, ekin=np.zeros_like(t) if ekin is None else ekin,
                    temperature=temperature, natoms=n, steps_done=len(t) - 1, seconds=1.0)


def test_equilibration_rule_and_drift_on_hand_made_series():
    p = MdParams(temperature_K=600.0, steps=100, timestep_fs=2.0, burn_in_fraction=0.5)
    flat = np.full(101, -50.0)
    ok = summarize(_synthetic(np.full(101, 600.0), flat), p)
    assert ok["equilibration"]["equilibrated"] and ok["burn_in_frames"] == 50
    cold = summarize(_synthetic(np.full(101, 480.0), flat), p)  # 20 % below target (tolerance 15 %)
    assert not cold["equilibration"]["equilibrated"] and not cold["equilibration"]["temperature_within_tolerance"]
    # E_pot rising 1 eV/atom/ps: over the last 100 fs that is 0.1 eV/atom > 0.5 k_B·600 K = 0.0259 eV
    t_ps = np.arange(101) * 2.0 / 1000
    rising = summarize(_synthetic(np.full(101, 600.0), -50.0 + 10 * 1.0 * t_ps), p)
    assert not rising["equilibration"]["no_epot_trend"]
    assert rising["drift_epot_eV_per_atom_per_ps"] == pytest.approx(1.0, rel=1e-9)
    assert rising["drift_etot_eV_per_atom_per_ps"] == pytest.approx(1.0, rel=1e-9)  # E_kin = 0 here


def test_predictor_calculator_matches_the_ase_calculator():
    from ase.calculators.emt import EMT

    from xtalbench.models.ase_calculator import AsePredictor

    atoms = crystal()
    atoms.rattle(0.05, seed=2)
    direct = atoms.copy()
    direct.calc = EMT()
    wrapped = atoms.copy()
    wrapped.calc = PredictorCalculator(AsePredictor("ase.calculators.emt.EMT", progress=False))
    assert wrapped.get_potential_energy() == pytest.approx(direct.get_potential_energy(), abs=1e-10)
    assert wrapped.get_forces() == pytest.approx(direct.get_forces(), abs=1e-10)
    assert wrapped.get_stress() == pytest.approx(direct.get_stress(), abs=1e-10)


@pytest.mark.skipif(not (REFS / "MgO" / "phonopy_disp.yaml").exists(), reason="../shared/data/phonopy-examples missing")
def test_harmonic_model_md_on_mgo_has_zero_sigma_both_ways():
    """MD with the DFT harmonic model of MgO: σ⁽²⁾ with Φ_DFT and with Φ from the model itself are 0."""
    from xtalbench.dynamics.anharmonicity import sigma_trajectory
    from xtalbench.dynamics.harmonic import HarmonicPredictor
    from xtalbench.dynamics.phonons import model_phonons, phonopy_to_atoms
    from xtalbench.dynamics.reference import load_reference

    ref = load_reference(REFS / "MgO")
    supercell = phonopy_to_atoms(ref.supercell)
    model = HarmonicPredictor(supercell, ref.force_constants)
    fc_model = model_phonons(ref, model).phonon.force_constants
    assert fc_model == pytest.approx(ref.force_constants, abs=1e-6)
    result = run_md(supercell, PredictorCalculator(model), MdParams(steps=30, temperature_K=600.0, seed=3))
    assert result.failure is None
    sigma = sigma_trajectory(result.frames, supercell, {"dft": ref.force_constants, "model": fc_model})
    assert max(sigma["dft"]["sigma_t"][1:]) < 1e-10
    assert max(sigma["model"]["sigma_t"][1:]) < 1e-5
    assert sigma["dft"]["class"] == sigma["model"]["class"] == "weak"


@pytest.mark.skipif(not (REFS / "Al2O3" / "phonopy_disp.yaml").exists(), reason="../shared/data/phonopy-examples missing")
def test_md_stage_and_user_trajectory_with_emt(tmp_path, monkeypatch):
    """The md stage end to end (EMT covers Al and O) and σ⁽²⁾ of a user extxyz whose 'DFT' forces are harmonic."""
    import json
    import shutil

    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import read, write

    from xtalbench.dynamics.calculator import atoms_to_row
    from xtalbench.dynamics.harmonic import HarmonicPredictor
    from xtalbench.dynamics.params import DynamicsParams
    from xtalbench.dynamics.phonons import phonopy_to_atoms
    from xtalbench.dynamics.reference import load_reference
    from xtalbench.dynamics.stage import run_md_stage, run_trajectories

    (tmp_path / "models").mkdir()
    shutil.copy(ROOT / "models" / "emt.yaml", tmp_path / "models" / "emt.yaml")
    twin = (ROOT / "models" / "emt.yaml").read_text().replace("name: emt", "name: emt-twin")
    (tmp_path / "models" / "emt-twin.yaml").write_text(twin)
    monkeypatch.chdir(tmp_path)
    params = DynamicsParams(models=["emt", "emt-twin"], data=str(REFS), device="cpu", md={"materials": ["Al2O3"], "steps": 6, "temperature_K": 300.0})
    result = run_md_stage(params, progress=False)
    # two identical models, same seed: identical trajectories, so each lies wholly in the other's support
    maps = result["configuration_maps"]["Al2O3"]
    assert maps["overlap"]["emt"]["emt-twin"] == 1.0 and maps["frames"] == {"emt": 4, "emt-twin": 4}
    assert (tmp_path / "plots/dynamics/md/maps/Al2O3.png").exists()
    pair = result["confusion_between_models"]["emt__vs__emt-twin"]
    assert pair["n"] + pair["missing"] == 1 and (pair["n"] == 0 or pair["agreement"] == 1.0)
    entry = result["models"]["emt"]["materials"]["Al2O3"]
    assert entry["steps_requested"] == 6 and entry["natoms"] == 120
    assert entry["functional_reference"] == "PBEsol" and not entry["like_with_like"]
    assert entry["completed"] and entry["sigma_dft"]["class"] in ("weak", "strong", "unstable")
    assert result["models"]["emt"]["confusion_phi_dft_vs_phi_model"]["n"] + result["models"]["emt"]["confusion_phi_dft_vs_phi_model"]["missing"] == 1
    frames = read(tmp_path / "datasets/dynamics/md/emt/Al2O3.extxyz", index=":")
    assert len(frames) == entry["steps_done"] + 1 and frames[0].get_forces().shape == (120, 3)
    csv_lines = (tmp_path / "plots/dynamics/md/emt.csv").read_text().splitlines()
    assert csv_lines[0].startswith("material,step,time_fs") and len(csv_lines) == len(frames) + 1
    assert json.loads((tmp_path / "metrics/dynamics/md.json").read_text())["models"]["emt"]["materials"]["Al2O3"]["natoms"] == 120

    ref = load_reference(REFS / "Al2O3")
    supercell = phonopy_to_atoms(ref.supercell)
    harmonic = HarmonicPredictor(supercell, ref.force_constants)
    rng = np.random.default_rng(0)
    aimd = []
    for _ in range(4):
        atoms = supercell.copy()
        atoms.positions += rng.normal(scale=0.03, size=(120, 3))
        atoms.calc = SinglePointCalculator(atoms, forces=harmonic.predict([atoms_to_row(atoms)])["forces"][0])
        aimd.append(atoms)
    write(tmp_path / "aimd.extxyz", aimd[:2], format="extxyz")
    write(tmp_path / "aimd2.extxyz", aimd[2:], format="extxyz")
    params = params.model_copy(update={"models": ["emt"]})
    paths = [(str(tmp_path / "aimd.extxyz"), "Al2O3"), (str(tmp_path / "aimd2.extxyz"), "Al2O3")]
    scored = run_trajectories(params, paths, str(tmp_path / "out.json"))
    own = scored["trajectories"][str(tmp_path / "aimd.extxyz")]["reference_forces"]
    assert own["sigma_mean"] == pytest.approx(0.0, abs=1e-6) and own["class"] == "weak"  # extxyz keeps ~8 digits
    assert scored["confusion_vs_reference"]["emt_dft"]["n"] + scored["confusion_vs_reference"]["emt_dft"]["missing"] == 2
    assert set(scored["configuration_maps"]["Al2O3"]["overlap"]) == {"aimd", "aimd2"}
    assert (tmp_path / "out.json").exists() and (tmp_path / "out_maps" / "Al2O3.png").exists()


def test_params_refuse_typos_and_the_md_cell_decides_whether_phi_dft_applies():
    from xtalbench.core.errors import ParamsError
    from xtalbench.core.params import parse_section
    from xtalbench.dynamics.params import DynamicsParams

    with pytest.raises(ParamsError, match="dynamics.md.temprature_K: unknown key"):
        parse_section(DynamicsParams, {"dynamics": {"md": {"temprature_K": 300}}}, "dynamics")
    with pytest.raises(ParamsError, match="supercell"):
        parse_section(DynamicsParams, {"dynamics": {"md": {"supercell": [2, 0, 2]}}}, "dynamics")
    if not (REFS / "MgO" / "phonopy_disp.yaml").exists():
        pytest.skip("../shared/data/phonopy-examples missing")
    from xtalbench.dynamics.reference import load_reference
    from xtalbench.dynamics.stage import md_start

    ref = load_reference(REFS / "MgO")
    same, applies = md_start(ref, DynamicsParams(md={"supercell": [2, 2, 2]}))
    assert applies and len(same) == 64
    other, applies = md_start(ref, DynamicsParams(md={"supercell": [1, 1, 1]}))
    assert not applies and len(other) == 8
