"""Metrics of one dimer energy curve E(r) against the DFT curve on the same distances.

Energies are taken relative to the curve's value at the largest distance (the dissociation
limit), so a model's own atomic reference energies drop out. With r in Å and E in eV:

- `curve_rmse_eV`: RMSE of E_rel(model) − E_rel(DFT) over every distance; `curve_rmse_capped_eV`
  over the distances where the DFT E_rel ≤ `max_energy` (the wall at r → 0 reaches 100+ eV).
- `r_eq_error_A`, `well_depth_error_eV`: equilibrium distance and well depth D_e = −min E_rel,
  model − DFT; the minimum is refined by the parabola through the lowest grid point and its
  two neighbours.
- `spurious_minima`: interior local minima of the model curve with a prominence above
  `tolerance` eV, beyond those the DFT curve has (a Morse curve has one).
- `repulsive_wall_fraction`: of the grid intervals below the DFT r_eq, the share where the
  model's energy falls as r grows (it should: a repulsive wall); `short_range_energy_eV`: the
  model's E_rel at the shortest distance (it should be large and positive).
- `force_consistency_mae_eV_per_A`: mean |F_bond + dE/dr| over the grid, F_bond the predicted
  force along the bond on the outer atom, dE/dr the model curve's own derivative
  (second-order finite differences, `numpy.gradient`): zero for a conservative model, up to
  the finite-difference error, which the steep wall (100+ eV/Å) dominates: the `_capped_` variant
  keeps the distances where the DFT E_rel ≤ `max_energy`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xtalbench.core.errors import XtalbenchError


class CurveError(XtalbenchError, ValueError):
    """A curve that cannot be scored; names the pair and the field."""


def _arrays(distances: Sequence[float], energies: Sequence[float], pair: str) -> tuple[np.ndarray, np.ndarray]:
    d, e = np.asarray(distances, dtype=np.float64), np.asarray(energies, dtype=np.float64)
    if d.shape != e.shape or d.ndim != 1 or len(d) < 3:
        raise CurveError(f"pair {pair!r}, field 'energies': {e.shape} energies for {d.shape} distances (need >= 3, equal lengths)")
    if not np.all(np.diff(d) > 0):
        raise CurveError(f"pair {pair!r}, field 'distances': not strictly increasing")
    if not np.isfinite(e).all():
        raise CurveError(f"pair {pair!r}, field 'energies': non-finite values")
    return d, e


def relative(energies: np.ndarray) -> np.ndarray:
    """Energies minus the value at the largest distance."""
    return energies - energies[-1]


def equilibrium(distances: np.ndarray, energies: np.ndarray) -> tuple[float, float]:
    """(r_eq, E_min): the grid minimum refined by the parabola through it and its neighbours."""
    i = int(np.argmin(energies))
    if i == 0 or i == len(energies) - 1:
        return float(distances[i]), float(energies[i])
    a, b, c = np.polyfit(distances[i - 1 : i + 2], energies[i - 1 : i + 2], 2)
    if a <= 0:
        return float(distances[i]), float(energies[i])
    r = -b / (2 * a)
    return float(r), float(c - b * b / (4 * a))


def local_minima(energies: np.ndarray, tolerance: float) -> list[int]:
    """Interior local minima whose prominence (lower of the highest points either side, minus the minimum) > tolerance."""
    out = []
    for i in range(1, len(energies) - 1):
        if energies[i] < energies[i - 1] and energies[i] <= energies[i + 1]:
            prominence = min(energies[:i].max(), energies[i + 1 :].max()) - energies[i]
            if prominence > tolerance:
                out.append(i)
    return out


def curve_metrics(distances: Sequence[float], e_model: Sequence[float], e_dft: Sequence[float], f_bond: Sequence[float] | None = None,
                  max_energy: float | None = 5.0, tolerance: float = 0.01, pair: str = "?") -> dict[str, float | int | None]:  # fmt: skip
    """Every metric of the module docstring for one pair (f_bond: predicted force along the bond, eV/Å)."""
    d, em = _arrays(distances, e_model, pair)
    _, ed = _arrays(distances, e_dft, pair)
    rm, rd = relative(em), relative(ed)
    diff = rm - rd
    capped = rd <= max_energy if max_energy is not None else np.ones(len(d), dtype=bool)
    r_m, e_min_m = equilibrium(d, rm)
    r_d, e_min_d = equilibrium(d, rd)
    wall = np.flatnonzero(d[1:] <= r_d)  # intervals [i, i+1] below the DFT minimum
    falls = np.diff(rm)[wall] < 0
    out: dict[str, float | int | None] = {
        "points": int(len(d)),
        "curve_rmse_eV": float(np.sqrt(np.mean(diff**2))),
        "curve_rmse_capped_eV": float(np.sqrt(np.mean(diff[capped] ** 2))) if capped.any() else None,
        "r_eq_A": r_m,
        "r_eq_dft_A": r_d,
        "r_eq_error_A": r_m - r_d,
        "well_depth_eV": -e_min_m,
        "well_depth_dft_eV": -e_min_d,
        "well_depth_error_eV": (-e_min_m) - (-e_min_d),
        "minima": len(local_minima(rm, tolerance)),
        "minima_dft": len(local_minima(rd, tolerance)),
        "repulsive_wall_fraction": float(falls.mean()) if len(wall) else None,
        "short_range_energy_eV": float(rm[0]),
        "force_consistency_mae_eV_per_A": None,
        "force_consistency_capped_mae_eV_per_A": None,
    }
    out["spurious_minima"] = max(0, int(out["minima"]) - int(out["minima_dft"]))  # type: ignore[arg-type]
    if f_bond is not None:
        f = np.asarray(f_bond, dtype=np.float64)
        if f.shape != d.shape:
            raise CurveError(f"pair {pair!r}, field 'forces': {f.shape} bond forces for {d.shape} distances")
        gap = np.abs(f + np.gradient(em, d))
        out["force_consistency_mae_eV_per_A"] = float(np.mean(gap))
        out["force_consistency_capped_mae_eV_per_A"] = float(np.mean(gap[capped])) if capped.any() else None
    return out


def summary(per_pair: dict[str, dict[str, float | int | None]]) -> dict[str, float | int | None]:
    """Means (and medians) over pairs, None-valued metrics left out; spurious minima per pair; counts."""
    def mean(key: str, absolute: bool = False, how=np.mean) -> float | None:
        values = [v[key] for v in per_pair.values() if v.get(key) is not None]
        return float(how(np.abs(values) if absolute else values)) if values else None

    return {
        "pairs": len(per_pair),
        "curve_rmse_eV": mean("curve_rmse_eV"),
        "curve_rmse_capped_eV": mean("curve_rmse_capped_eV"),
        "curve_rmse_capped_median_eV": mean("curve_rmse_capped_eV", how=np.median),  # robust to one collapsed pair
        "r_eq_mae_A": mean("r_eq_error_A", absolute=True),
        "r_eq_median_abs_error_A": mean("r_eq_error_A", absolute=True, how=np.median),
        "well_depth_mae_eV": mean("well_depth_error_eV", absolute=True),
        "well_depth_median_abs_error_eV": mean("well_depth_error_eV", absolute=True, how=np.median),
        "spurious_minima_per_pair": mean("spurious_minima"),
        "pairs_with_spurious_minima": sum(1 for v in per_pair.values() if (v.get("spurious_minima") or 0) > 0),
        "repulsive_wall_fraction": mean("repulsive_wall_fraction"),
        "pairs_without_repulsion": sum(1 for v in per_pair.values() if (v.get("short_range_energy_eV") or 0) <= 0),
        "force_consistency_mae_eV_per_A": mean("force_consistency_mae_eV_per_A"),
        "force_consistency_capped_mae_eV_per_A": mean("force_consistency_capped_mae_eV_per_A"),
    }
