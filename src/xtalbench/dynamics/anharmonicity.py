"""The anharmonicity score σ⁽²⁾ (Knoop et al., Phys. Rev. Materials 4, 083809, 2020).

For a frame with displacements u from the reference sites and forces F,
F⁽²⁾ = −Φ·u is the harmonic force of the supercell force constants Φ (shape N×N×3×3), and

    σ⁽²⁾(t) = sqrt( Σ_{I,α} (F − F⁽²⁾)² / Σ_{I,α} F² )        (all atoms I, Cartesian α, one frame)

`sigma_mean` is the time average of σ⁽²⁾(t) over the frames after burn-in (the class uses it);
`sigma_pooled` sums numerator and denominator over those frames first (Knoop's trajectory σ_A).
Classes: σ < weak (0.5) weakly anharmonic, weak ≤ σ ≤ strong (1.0) strongly anharmonic,
σ > strong dynamically unstable at that temperature. Any trajectory works (ASE frames with
forces, e.g. a user's AIMD extxyz), given the reference supercell and Φ; atoms may come in another
order: they are matched to the nearest reference site of the same element.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xtalbench.core.errors import XtalbenchError

CLASSES = ("weak", "strong", "unstable")


class TrajectoryError(XtalbenchError, ValueError):
    """A trajectory that does not fit the reference supercell (atom count, elements, missing forces)."""


def displacements(positions: np.ndarray, reference: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """u = r − r₀ wrapped to the nearest periodic image (fractional rounding), shape (T, N, 3)."""
    cell = np.asarray(cell, dtype=np.float64)
    frac = (np.asarray(positions, dtype=np.float64) - reference) @ np.linalg.inv(cell)
    frac -= np.round(frac)
    return frac @ cell


def harmonic_forces(u: np.ndarray, fc: np.ndarray) -> np.ndarray:
    """F⁽²⁾ = −Φ·u for frames u (T, N, 3) and full force constants Φ (N, N, 3, 3)."""
    return -np.einsum("ijab,tjb->tia", fc, u, optimize=True)


def sigma_frames(forces: np.ndarray, harmonic: np.ndarray) -> np.ndarray:
    """σ⁽²⁾(t) per frame (NaN for a frame without forces)."""
    num = ((forces - harmonic) ** 2).sum(axis=(1, 2))
    den = (forces**2).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(num / den)


def sigma_pooled(forces: np.ndarray, harmonic: np.ndarray) -> float:
    den = float((forces**2).sum())
    return float(np.sqrt(((forces - harmonic) ** 2).sum() / den)) if den > 0 else float("nan")


def classify(sigma: float | None, weak: float = 0.5, strong: float = 1.0) -> str | None:
    """weak (σ < weak), strong (weak ≤ σ ≤ strong), unstable (σ > strong); None for a missing σ."""
    if sigma is None or not np.isfinite(sigma):
        return None
    return "weak" if sigma < weak else "strong" if sigma <= strong else "unstable"


def confusion(rows: Sequence[str | None], cols: Sequence[str | None], row_name: str, col_name: str) -> dict[str, Any]:
    """Confusion matrix of two class sequences (pairs with a missing class are counted apart)."""
    matrix = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    missing = 0
    for a, b in zip(rows, cols, strict=True):
        if a is None or b is None:
            missing += 1
            continue
        matrix[CLASSES.index(a), CLASSES.index(b)] += 1
    n = int(matrix.sum())
    return {
        "rows": row_name,
        "columns": col_name,
        "labels": list(CLASSES),
        "matrix": matrix.tolist(),
        "n": n,
        "agreement": float(np.trace(matrix) / n) if n else None,
        "missing": missing,
    }


def match_sites(numbers: np.ndarray, positions: np.ndarray, ref_numbers: np.ndarray, ref_positions: np.ndarray, cell: np.ndarray, source: str = "<trajectory>") -> np.ndarray:
    """order such that frame atom order[k] sits on reference site k (nearest site of the same element)."""
    numbers, ref_numbers = np.asarray(numbers), np.asarray(ref_numbers)
    if len(numbers) != len(ref_numbers):
        raise TrajectoryError(f"{source}: {len(numbers)} atoms, the reference supercell has {len(ref_numbers)}")
    if sorted(numbers.tolist()) != sorted(ref_numbers.tolist()):
        raise TrajectoryError(f"{source}: its elements differ from the reference supercell's")
    u = displacements(positions[None, None, :, :], ref_positions[None, :, None, :], cell)[0]  # (N_ref, N, 3)
    dist = np.linalg.norm(u, axis=-1)
    if np.array_equal(numbers, ref_numbers):
        site_gap = np.linalg.norm(displacements(ref_positions[None, None], ref_positions[None, :, None], cell)[0], axis=-1)
        np.fill_diagonal(site_gap, np.inf)
        if np.diag(dist).max() < 0.5 * site_gap.min():  # same order, every atom near its own site
            return np.arange(len(numbers))
    dist[ref_numbers[:, None] != numbers[None, :]] = np.inf
    order = np.argmin(dist, axis=1)
    if len(set(order.tolist())) != len(order):
        raise TrajectoryError(f"{source}: atoms cannot be matched one-to-one to the reference sites (displacements too large?)")
    return order


def sigma_trajectory(
    frames: Sequence[Any],
    reference_atoms: Any,
    force_constants: dict[str, np.ndarray],
    forces: np.ndarray | None = None,
    burn_in: int = 0,
    weak: float = 0.5,
    strong: float = 1.0,
    source: str = "<trajectory>",
) -> dict[str, Any]:
    """σ⁽²⁾ of ASE frames against `reference_atoms` for each named Φ (e.g. {"dft": Φ_DFT, "model": Φ_model}).

    `forces` (T, N, 3) overrides the frames' own forces (e.g. a model's forces on AIMD frames).
    """
    if not frames:
        raise TrajectoryError(f"{source}: no frames")
    ref_pos = np.asarray(reference_atoms.positions, dtype=np.float64)
    cell = np.asarray(reference_atoms.cell.array, dtype=np.float64)
    order = match_sites(frames[0].numbers, frames[0].positions, reference_atoms.numbers, ref_pos, cell, source)
    positions = np.asarray([f.positions[order] for f in frames], dtype=np.float64)
    if forces is None:
        try:
            forces = np.asarray([f.get_forces(apply_constraint=False) for f in frames], dtype=np.float64)
        except Exception as error:  # noqa: BLE001 - ASE raises RuntimeError / PropertyNotImplementedError without forces
            raise TrajectoryError(f"{source}: frames carry no forces ({error})") from None
    forces = np.asarray(forces, dtype=np.float64)[:, order]
    u = displacements(positions, ref_pos, cell)
    out: dict[str, Any] = {"frames": len(frames), "burn_in": int(burn_in)}
    for name, fc in force_constants.items():
        f2 = harmonic_forces(u, fc)
        per_frame = sigma_frames(forces, f2)
        kept = slice(burn_in, None)
        mean = float(np.nanmean(per_frame[kept])) if np.isfinite(per_frame[kept]).any() else float("nan")
        out[name] = {
            "sigma_t": per_frame.tolist(),
            "sigma_mean": mean,
            "sigma_pooled": sigma_pooled(forces[kept], f2[kept]),
            "class": classify(mean, weak, strong),
        }
    return out
