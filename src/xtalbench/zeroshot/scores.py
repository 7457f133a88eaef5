"""Per-frame errors → MAE/RMSE with material-bootstrap CIs, and unseen/seen error ratios.

Every metric is a ratio of additive per-frame sums (`ERROR_COLUMNS`), so a bootstrap replicate
is a resample of per-material sums (frames of one material are resampled together):

- `energy_mae_meV_per_atom`, `energy_rmse_meV_per_atom`: |ΔE|/N per frame, averaged over frames.
- `force_mae_component_meV_per_A`: mean |ΔF_ij| over every Cartesian component of every atom.
- `force_mae_vector_norm_meV_per_A`: mean ‖ΔF_i‖ over atoms (MatterSim's "force MAE").
- `stress_mae_GPa`: mean |Δσ_k| over the 6 Voigt components.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from xtalbench.core.errors import XtalbenchError

MEV = 1000.0
ERROR_COLUMNS = ("e_abs", "e_sq", "e_count", "f_abs", "f_count", "f_norm", "f_atoms", "s_abs", "s_count")
# metric → (numerator column, denominator column, scale, root?)
METRICS: dict[str, tuple[str, str, float, bool]] = {
    "energy_mae_meV_per_atom": ("e_abs", "e_count", MEV, False),
    "energy_rmse_meV_per_atom": ("e_sq", "e_count", MEV, True),
    "force_mae_component_meV_per_A": ("f_abs", "f_count", MEV, False),
    "force_mae_vector_norm_meV_per_A": ("f_norm", "f_atoms", MEV, False),
    "stress_mae_GPa": ("s_abs", "s_count", 1.0, False),
}
RATIO_METRICS = ("energy_mae_meV_per_atom", "force_mae_vector_norm_meV_per_A", "stress_mae_GPa")


class ScoreError(XtalbenchError, ValueError):
    """Predictions that cannot be scored against their labels; names the record and the field."""


def frame_error_sums(
    record: str,
    nsites: int,
    energy_pred: float | None,
    energy_true: float | None,
    forces_pred: Sequence[float] | np.ndarray | None,
    forces_true: Sequence[float] | np.ndarray | None,
    stress_pred: Sequence[float] | np.ndarray | None,
    stress_true: Sequence[float] | np.ndarray | None,
) -> dict[str, float]:
    """The additive error sums of one frame (zeros where a label or a prediction is missing).

    Energies in eV (whole cell), forces eV/Å (N×3, flat or not), stresses eV/Å³ (6 Voigt);
    the sums are in eV/atom, eV/Å and GPa.
    """
    from ase.units import GPa

    out = dict.fromkeys(ERROR_COLUMNS, 0.0)
    if energy_pred is not None and energy_true is not None and np.isfinite(energy_pred) and np.isfinite(energy_true):
        err = (float(energy_pred) - float(energy_true)) / nsites
        out.update(e_abs=abs(err), e_sq=err * err, e_count=1.0)
    if forces_pred is not None and forces_true is not None:
        fp, ft = np.asarray(forces_pred, dtype=np.float64), np.asarray(forces_true, dtype=np.float64)
        if fp.size != 3 * nsites or ft.size != 3 * nsites:
            raise ScoreError(f"record {record!r}, field 'forces': {fp.size} predicted and {ft.size} DFT values, expected {3 * nsites}")
        diff = (fp - ft).reshape(nsites, 3)
        if np.isfinite(diff).all():
            out.update(f_abs=float(np.abs(diff).sum()), f_count=float(diff.size), f_norm=float(np.linalg.norm(diff, axis=1).sum()), f_atoms=float(nsites))
    if stress_pred is not None and stress_true is not None:
        sp, st = np.asarray(stress_pred, dtype=np.float64), np.asarray(stress_true, dtype=np.float64)
        if sp.size != 6 or st.size != 6:
            raise ScoreError(f"record {record!r}, field 'stress': {sp.size} predicted and {st.size} DFT values, expected 6 (Voigt)")
        diff = (sp - st) / GPa
        if np.isfinite(diff).all():
            out.update(s_abs=float(np.abs(diff).sum()), s_count=6.0)
    return out


def metric_from_sums(sums: Mapping[str, float], name: str) -> float | None:
    num, den, scale, root = METRICS[name]
    if not sums[den] > 0:
        return None
    value = sums[num] / sums[den]
    return float(scale * (np.sqrt(value) if root else value))


def _group_sums(errors: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """(groups × ERROR_COLUMNS) per-material sums, materials in sorted order."""
    cols = list(ERROR_COLUMNS)
    grouped = errors.groupby("material_id", sort=True)[cols].sum()
    return grouped.to_numpy(dtype=np.float64), cols


def _replicate_values(sums: np.ndarray, cols: list[str], name: str) -> np.ndarray:
    num, den, scale, root = METRICS[name]
    n, d = sums[..., cols.index(num)], sums[..., cols.index(den)]
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(d > 0, n / np.where(d > 0, d, 1.0), np.nan)
    return scale * (np.sqrt(value) if root else value)


def bootstrap_sums(errors: pd.DataFrame, n_bootstrap: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """(n_bootstrap × ERROR_COLUMNS) sums of material resamples (seeded)."""
    groups, cols = _group_sums(errors)
    rng = np.random.default_rng(seed)
    if len(groups) == 0:
        return np.zeros((n_bootstrap, len(cols))), cols
    idx = rng.integers(0, len(groups), size=(n_bootstrap, len(groups)))
    return groups[idx].sum(axis=1), cols


def summarize(errors: pd.DataFrame, n_bootstrap: int = 1000, seed: int = 0, ci: float = 0.95) -> dict[str, Any]:
    """Every metric of `METRICS` with its material-bootstrap percentile CI, and the counts."""
    totals = {c: float(errors[c].sum()) if len(errors) else 0.0 for c in ERROR_COLUMNS}
    reps, cols = bootstrap_sums(errors, n_bootstrap, seed)
    lo, hi = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    out: dict[str, Any] = {"frames": int(len(errors)), "materials": int(errors["material_id"].nunique()) if len(errors) else 0,
                           "frames_with_energy": int(totals["e_count"]), "atoms_with_forces": int(totals["f_atoms"]),
                           "frames_with_stress": int(totals["s_count"] // 6)}  # fmt: skip
    for name in METRICS:
        value = metric_from_sums(totals, name)
        values = _replicate_values(reps, cols, name)
        finite = values[np.isfinite(values)]
        out[name] = value
        out[f"{name}_ci"] = None if value is None or not len(finite) else [float(np.percentile(finite, lo)), float(np.percentile(finite, hi))]
    return out


def error_ratio(unseen: pd.DataFrame, seen: pd.DataFrame, metric: str, n_bootstrap: int = 1000, seed: int = 0, ci: float = 0.95) -> dict[str, Any]:
    """metric(unseen) / metric(seen) with a CI from independent material bootstraps of both sets."""
    tot_u = {c: float(unseen[c].sum()) for c in ERROR_COLUMNS}
    tot_s = {c: float(seen[c].sum()) for c in ERROR_COLUMNS}
    num, den = metric_from_sums(tot_u, metric), metric_from_sums(tot_s, metric)
    if num is None or den is None or den == 0:
        return {"ratio": None, "ci": None, "unseen": num, "seen": den}
    reps_u, cols = bootstrap_sums(unseen, n_bootstrap, seed)
    reps_s, _ = bootstrap_sums(seen, n_bootstrap, seed + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = _replicate_values(reps_u, cols, metric) / _replicate_values(reps_s, cols, metric)
    ratios = ratios[np.isfinite(ratios)]
    lo, hi = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    return {"ratio": float(num / den), "ci": [float(np.percentile(ratios, lo)), float(np.percentile(ratios, hi))] if len(ratios) else None,
            "unseen": num, "seen": den}  # fmt: skip
