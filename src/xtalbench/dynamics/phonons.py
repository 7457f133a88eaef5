"""Model phonons on a reference's own displacements, and their errors against the DFT phonons.

The model's force constants come from the very displacement set of the DFT reference (one batched
`predict` call: the undisplaced supercell + every displaced one). The model is evaluated at the
DFT geometry (no relaxation), so a model whose equilibrium lattice differs sees a strained crystal:
the comparison is of force constants at one geometry. With `subtract_residual_forces`, the model's
forces on the undisplaced supercell are subtracted (phonopy's `--fz`), removing the residual forces
of a geometry that is not the model's equilibrium. NAC uses the reference's Born charges and
dielectric tensor (models do not predict them).

Errors on the same q-mesh (irreducible points, weighted by their multiplicity), bands compared
by index after sorting frequencies at each q (phonopy's order):
- `rmse_omega2_THz2`: RMSE of ω² (signed: imaginary modes have ω² < 0), THz².
- `rmse_group_velocity_THz_A`: RMSE of |v_model − v_DFT| per mode, THz·Å.
- `max_frequency_error_THz` and where (q-point, band).
- imaginary modes (ω < −tol): count of modes on the mesh (full-mesh count, multiplicity included)
  and on the band path, and the q-points where they are.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

GAMMA_LABELS = {"GAMMA": "Γ", "G": "Γ"}


@dataclass
class ModelPhonons:
    phonon: Any  # phonopy.Phonopy with the model's full force constants
    n_structures: int  # supercells sent to the model (undisplaced + displaced)
    n_predict_calls: int  # batched predict calls (1)
    seconds: float
    residual_force_max: float  # eV/Å, largest model force on the undisplaced supercell


def phonopy_to_atoms(cell) -> Any:
    from ase import Atoms

    return Atoms(numbers=cell.numbers, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True)


def model_phonons(reference, predictor, batch_size: int | None = None, subtract_residual_forces: bool = True) -> ModelPhonons:
    """Force constants of `predictor` on `reference`'s displacement dataset (NAC params copied)."""
    from xtalbench.dynamics.calculator import predict_atoms

    # A copy keeps the reference's cells, (magnetic) symmetry, primitive matrix and NAC parameters.
    phonon = copy.deepcopy(reference)
    dataset = copy.deepcopy(reference.dataset)
    for entry in dataset.get("first_atoms", []):
        entry.pop("forces", None)
    dataset.pop("forces", None)
    phonon.dataset = dataset
    phonon.force_constants = None
    displaced = [phonopy_to_atoms(c) for c in phonon.supercells_with_displacements]
    start = time.perf_counter()
    out = predict_atoms(predictor, [phonopy_to_atoms(phonon.supercell), *displaced], batch_size)
    seconds = time.perf_counter() - start
    forces = np.asarray([np.asarray(f, dtype=np.float64) for f in out["forces"]])
    residual = forces[0]
    displaced_forces = forces[1:] - residual if subtract_residual_forces else forces[1:]
    phonon.forces = displaced_forces
    phonon.produce_force_constants(calculate_full_force_constants=True, show_drift=False)
    phonon.symmetrize_force_constants(show_drift=False)
    return ModelPhonons(phonon, len(displaced) + 1, 1, seconds, float(np.abs(residual).max()))


def band_path(reference, npoints: int) -> tuple[list[np.ndarray], list[str], list[bool]]:
    """phonopy's auto band path (seekpath) for the reference's primitive cell."""
    from phonopy.phonon.band_structure import get_band_qpoints_by_seekpath

    bands, labels, connections = get_band_qpoints_by_seekpath(reference.primitive, npoints, is_const_interval=True)
    return bands, [GAMMA_LABELS.get(label, label) for label in labels], connections


def run_bands(phonon, bands, labels, connections) -> dict[str, Any]:
    result = phonon.run_band_structure(bands, path_connections=connections, labels=labels)
    return {
        "qpoints": np.concatenate(result.qpoints),
        "distances": np.concatenate(result.distances),
        "frequencies": np.concatenate(result.frequencies),
        "segment": np.concatenate([np.full(len(q), i) for i, q in enumerate(result.qpoints)]),
    }


def run_mesh(phonon, mesh) -> dict[str, np.ndarray]:
    result = phonon.run_mesh(mesh, with_group_velocities=True, is_gamma_center=True)
    return {k: np.asarray(getattr(result, k)) for k in ("qpoints", "weights", "frequencies", "group_velocities")}


def imaginary(frequencies: np.ndarray, qpoints: np.ndarray, tol: float, weights: np.ndarray | None = None, max_listed: int = 20) -> dict[str, Any]:
    """Modes with ω < −tol: how many (multiplicity-weighted if `weights`), the lowest, and at which q."""
    mask = frequencies < -tol
    per_q = mask.sum(axis=1)
    count = int((per_q * (weights if weights is not None else 1)).sum())
    where = np.flatnonzero(per_q)
    order = where[np.argsort(frequencies[where].min(axis=1), kind="stable")][:max_listed]
    return {
        "count": count,
        "qpoints": [[round(float(x), 4) for x in qpoints[i]] for i in order],
        "lowest_THz": float(frequencies.min()) if count else None,
    }


def compare_mesh(ref: dict[str, np.ndarray], model: dict[str, np.ndarray], tol: float) -> dict[str, Any]:
    """Errors of the model's mesh phonons against the reference's (same q-points, weighted)."""
    if not np.allclose(ref["qpoints"], model["qpoints"]):
        raise ValueError("reference and model meshes differ")
    w = ref["weights"] / ref["weights"].sum()
    f_ref, f_mod = ref["frequencies"], model["frequencies"]
    w2_ref, w2_mod = np.sign(f_ref) * f_ref**2, np.sign(f_mod) * f_mod**2
    nb = f_ref.shape[1]
    rmse_w2 = float(np.sqrt((w[:, None] * (w2_mod - w2_ref) ** 2).sum() / nb))
    dv = np.linalg.norm(model["group_velocities"] - ref["group_velocities"], axis=-1)
    rmse_v = float(np.sqrt((w[:, None] * dv**2).sum() / nb))
    df = np.abs(f_mod - f_ref)
    iq, ib = np.unravel_index(int(np.argmax(df)), df.shape)
    return {
        "rmse_omega2_THz2": rmse_w2,
        "rmse_frequency_THz": float(np.sqrt((w[:, None] * (f_mod - f_ref) ** 2).sum() / nb)),
        "rmse_group_velocity_THz_A": rmse_v,
        "max_frequency_error_THz": float(df[iq, ib]),
        "max_frequency_error_at": {"qpoint": [round(float(x), 4) for x in ref["qpoints"][iq]], "band": int(ib)},
        "mesh_points_irreducible": len(w),
        "mesh_points_full": int(ref["weights"].sum()),
        "imaginary_mesh": imaginary(f_mod, model["qpoints"], tol, model["weights"]),
        "reference_imaginary_mesh": imaginary(f_ref, ref["qpoints"], tol, ref["weights"]),
    }


def dos(phonon, freq_min: float, freq_max: float, pitch: float) -> tuple[np.ndarray, np.ndarray]:
    result = phonon.run_total_dos(freq_min=freq_min, freq_max=freq_max, freq_pitch=pitch)
    return np.asarray(result.frequency_points), np.asarray(result.dos)


def mesh_numbers_for(reference, mesh: float | list[int]) -> list[int]:
    """Diagonal mesh numbers (a length → phonopy's symmetry-adapted rule), so DFT and model use one regular grid."""
    if isinstance(mesh, (int, float)):
        from phonopy.phonon.grid import length2mesh

        return [int(x) for x in length2mesh(float(mesh), reference.primitive.cell, reference.primitive_symmetry.pointgroup_operations)]
    return [int(x) for x in mesh]


def compare_material(reference, model: ModelPhonons, mesh, band_npoints: int, dos_pitch: float, tol: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, plot data) of one model on one reference."""
    mesh_numbers = mesh_numbers_for(reference, mesh)
    ref_mesh = run_mesh(reference, mesh_numbers)
    mod_mesh = run_mesh(model.phonon, mesh_numbers)
    metrics = compare_mesh(ref_mesh, mod_mesh, tol)
    metrics["mesh"] = mesh_numbers
    lo = float(min(ref_mesh["frequencies"].min(), mod_mesh["frequencies"].min())) - 1.0
    hi = float(max(ref_mesh["frequencies"].max(), mod_mesh["frequencies"].max())) + 1.0
    freq, dos_ref = dos(reference, lo, hi, dos_pitch)
    _, dos_mod = dos(model.phonon, lo, hi, dos_pitch)
    bands, labels, connections = band_path(reference, band_npoints)
    b_ref = run_bands(reference, bands, labels, connections)
    b_mod = run_bands(model.phonon, bands, labels, connections)
    metrics["imaginary_band"] = imaginary(b_mod["frequencies"], b_mod["qpoints"], tol)
    metrics["reference_imaginary_band"] = imaginary(b_ref["frequencies"], b_ref["qpoints"], tol)
    metrics["max_frequency_error_band_THz"] = float(np.abs(b_mod["frequencies"] - b_ref["frequencies"]).max())
    metrics["band_path"] = labels
    plot = {"bands_ref": b_ref, "bands_model": b_mod, "labels": labels, "connections": connections, "dos": (freq, dos_ref, dos_mod)}
    return metrics, plot
