"""Short Langevin MD with failure detection and an equilibration rule.

Failures are reported, never raised: the run stops at the first failing step and says why.
- `non_finite`: energy, forces or positions not finite.
- `close_atoms`: two atoms closer than `min_distance` Å.
- `energy_blowup`: |E_pot − E_pot(0)| / N above `max_energy_change_eV_per_atom`.
- `lost_periodicity`: the cell or pbc changed, or an atom moved from its starting site by more
  than `max_displacement_fraction` × the shortest cell height, so it can no longer be assigned
  to its lattice site (a melted or disordered crystal: σ⁽²⁾ is then undefined).
- `calculator_error`: the model raised (its message is kept).

Equilibration rule (the exercise's "did it equilibrate?"): drop the first `burn_in_fraction` of the
frames; the run is equilibrated iff it completed, the mean temperature of the rest is within
`temperature_tolerance` × T₀ of the target T₀, and the potential energy has no trend there:
|slope of E_pot/N| × window ≤ `energy_trend_tolerance_kT` × k_B T₀ (least-squares line).

Drift: least-squares slope of E_total/N over the frames after burn-in, eV/atom/ps. Under a
Langevin thermostat E_total is not conserved, so this measures net heating or cooling by the
bath plus integration error, not integration error alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from xtalbench.dynamics.params import MdParams


class _Failure(Exception):
    def __init__(self, kind: str, step: int, detail: str):
        self.kind, self.step, self.detail = kind, step, detail
        super().__init__(f"{kind} at step {step}: {detail}")


@dataclass
class MdResult:
    frames: list[Atoms]
    step: np.ndarray
    time_fs: np.ndarray
    epot: np.ndarray  # eV (total of the cell)
    ekin: np.ndarray
    temperature: np.ndarray
    natoms: int
    steps_done: int
    seconds: float
    failure: dict[str, Any] | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def etot(self) -> np.ndarray:
        return self.epot + self.ekin


def _heights(cell: np.ndarray) -> np.ndarray:
    volume = abs(np.linalg.det(cell))
    return np.array([volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)])


class _Watch:
    """Checks every step for the failures listed in the module docstring."""

    def __init__(self, atoms: Atoms, params: MdParams, e0: float):
        self.atoms, self.p, self.e0 = atoms, params, e0
        self.cell0 = atoms.cell.array.copy()
        self.pbc0 = atoms.pbc.copy()
        self.sites = atoms.positions.copy()
        self.max_shift = params.max_displacement_fraction * float(_heights(self.cell0).min())
        self.dyn: Any = None

    def __call__(self) -> None:
        from ase.neighborlist import neighbor_list

        self.step = int(self.dyn.nsteps)
        a, p = self.atoms, self.p
        energy = a.get_potential_energy()
        forces = a.get_forces(apply_constraint=False)
        if not (np.isfinite(energy) and np.isfinite(forces).all() and np.isfinite(a.positions).all()):
            raise _Failure("non_finite", self.step, "energy, forces or positions are not finite")
        if not (np.allclose(a.cell.array, self.cell0) and (a.pbc == self.pbc0).all()):
            raise _Failure("lost_periodicity", self.step, "the cell or pbc changed")
        shift = np.linalg.norm(a.positions - self.sites, axis=1)  # ASE MD does not wrap positions
        if shift.max() > self.max_shift:
            i = int(np.argmax(shift))
            raise _Failure("lost_periodicity", self.step, f"atom {i} moved {shift[i]:.2f} Å from its site (limit {self.max_shift:.2f} Å)")
        i, j, d = neighbor_list("ijd", a, p.min_distance)
        if len(d):
            k = int(np.argmin(d))
            raise _Failure("close_atoms", self.step, f"atoms {int(i[k])} and {int(j[k])} at {float(d[k]):.3f} Å (< {p.min_distance} Å)")
        change = abs(energy - self.e0) / len(a)
        if change > p.max_energy_change_eV_per_atom:
            raise _Failure("energy_blowup", self.step, f"|E_pot − E_pot(0)| = {change:.3f} eV/atom (> {p.max_energy_change_eV_per_atom})")


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.ptp(x) == 0:
        return float("nan")
    return float(np.polyfit(x, y, 1)[0])


def run_md(atoms: Atoms, calculator: Any, params: MdParams, progress: bool = False) -> MdResult:
    """Langevin MD from `atoms` (velocities from a seeded Maxwell–Boltzmann draw); never raises on a failing model."""
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, thermalize_momenta
    from tqdm import tqdm

    atoms = atoms.copy()
    atoms.calc = calculator
    thermalize_momenta(atoms, params.temperature_K, rng=np.random.default_rng(params.seed))
    Stationary(atoms)
    atoms.set_constraint(FixCom())  # ASE's recommended way to keep the centre of mass (Langevin fixcm is deprecated)
    frames: list[Atoms] = []
    rows: list[tuple[int, float, float, float, float]] = []
    failure: dict[str, Any] | None = None
    bar = tqdm(total=params.steps, desc="md", unit="step", disable=not progress, leave=False)
    start = time.perf_counter()
    dyn = Langevin(
        atoms,
        timestep=params.timestep_fs * units.fs,
        temperature_K=params.temperature_K,
        friction=params.friction_per_fs / units.fs,
        fixcm=False,
        rng=np.random.default_rng(params.seed + 1),
    )

    def record() -> None:
        step = dyn.nsteps
        if step % params.interval:
            return
        frame = atoms.copy()
        frame.set_constraint()
        frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(), forces=atoms.get_forces(apply_constraint=False))
        frame.info.update(step=step, time_fs=step * params.timestep_fs)
        frames.append(frame)
        rows.append((step, step * params.timestep_fs, atoms.get_potential_energy(), atoms.get_kinetic_energy(), atoms.get_temperature()))
        bar.n = step
        bar.refresh()

    try:
        e0 = atoms.get_potential_energy()
        watch = _Watch(atoms, params, e0)
        watch.dyn = dyn
        dyn.attach(watch, interval=1)  # ASE calls observers at step 0 too
        dyn.attach(record, interval=1)
        dyn.run(params.steps)
    except _Failure as error:
        failure = {"kind": error.kind, "step": error.step, "detail": error.detail}
    except Exception as error:  # noqa: BLE001 - a failing model is a result here, not a crash
        failure = {"kind": "calculator_error", "step": int(dyn.nsteps), "detail": f"{type(error).__name__}: {error}"}
    seconds = time.perf_counter() - start
    bar.close()
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    result = MdResult(
        frames=frames,
        step=arr[:, 0].astype(int),
        time_fs=arr[:, 1],
        epot=arr[:, 2],
        ekin=arr[:, 3],
        temperature=arr[:, 4],
        natoms=len(atoms),
        steps_done=int(dyn.nsteps) if failure is None else int(failure["step"]),
        seconds=seconds,
        failure=failure,
    )
    result.summary = summarize(result, params)
    return result


def burn_in_frames(n_frames: int, fraction: float) -> int:
    return int(np.floor(n_frames * fraction))


def summarize(result: MdResult, params: MdParams) -> dict[str, Any]:
    """Energies, temperature, drift, the equilibration verdict and throughput of one run."""
    n = result.natoms
    start = burn_in_frames(len(result.step), params.burn_in_fraction)
    t_ps = result.time_fs[start:] / 1000.0
    completed = result.failure is None
    kT = units.kB * params.temperature_K
    epot = result.epot[start:] / n
    window_ps = float(np.ptp(t_ps)) if len(t_ps) else 0.0
    trend = abs(_slope(t_ps, epot)) * window_ps if len(t_ps) > 1 else float("nan")
    t_mean = float(result.temperature[start:].mean()) if len(t_ps) else float("nan")
    t_ok = bool(abs(t_mean - params.temperature_K) <= params.temperature_tolerance * params.temperature_K)
    trend_ok = bool(np.isfinite(trend) and trend <= params.energy_trend_tolerance_kT * kT)
    return {
        "completed": completed,
        "failure": result.failure,
        "steps_requested": params.steps,
        "steps_done": result.steps_done,
        "natoms": n,
        "seconds": result.seconds,
        "steps_per_s": result.steps_done / result.seconds if result.seconds > 0 else None,
        "atom_steps_per_s": result.steps_done * n / result.seconds if result.seconds > 0 else None,
        "burn_in_frames": start,
        "temperature_mean_K": t_mean,
        "temperature_std_K": float(result.temperature[start:].std()) if len(t_ps) else None,
        "epot_mean_eV_per_atom": float(epot.mean()) if len(epot) else None,
        "etot_mean_eV_per_atom": float(result.etot[start:].mean() / n) if len(t_ps) else None,
        "drift_etot_eV_per_atom_per_ps": _slope(t_ps, result.etot[start:] / n),
        "drift_epot_eV_per_atom_per_ps": _slope(t_ps, epot),
        "equilibration": {
            "equilibrated": bool(completed and t_ok and trend_ok),
            "temperature_within_tolerance": t_ok,
            "epot_trend_eV_per_atom": trend,
            "epot_trend_limit_eV_per_atom": params.energy_trend_tolerance_kT * kT,
            "no_epot_trend": trend_ok,
            "rule": (
                f"after dropping the first {params.burn_in_fraction:.0%} of frames: |<T> - T0| <= "
                f"{params.temperature_tolerance:g}·T0 and |dE_pot/dt|·window <= {params.energy_trend_tolerance_kT:g}·k_B·T0 per atom"
            ),
        },
    }
