"""Error metrics of predicted energies, forces and stresses against DFT labels.

Every metric is an aggregate of per-row sums (`RowStats`), so that the same per-frame numbers
serve every split × fold × role subset, and the bootstrap can resample materials cheaply:
MAE = Σ|err| / Σcount, RMSE = √(Σerr² / Σcount). Units follow the names: energies in
meV/atom, forces in meV/Å (component-wise), stresses in GPa (component-wise, 6 Voigt).

`score_model` (the entry point the evaluate stage calls) lives in `xtalbench.evaluate.scoring` and is
re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MEV = 1000.0
FORCE_COSINE_MIN_NORM = 1e-3  # eV/Å: below this a force has no meaningful direction

# Names (with units) of the per-set metrics; `STAT_COLUMNS` are the additive per-row sums.
# `HEADLINE` maps each headline MAE to (Σ|err| column, count column, scale to its unit).
ERROR_METRICS = (
    "energy_mae_meV_per_atom",
    "energy_rmse_meV_per_atom",
    "force_mae_meV_per_A",
    "force_rmse_meV_per_A",
    "force_cosine",
    "stress_mae_GPa",
    "e_form_mae_meV_per_atom",
    "e_form_rmse_meV_per_atom",
)
STAT_COLUMNS = (
    "energy_abs",  # |ΔE|/N, eV/atom (one per frame)
    "energy_sq",
    "energy_count",
    "force_abs",  # Σ|ΔF_ij| over components, eV/Å
    "force_sq",
    "force_count",
    "force_cos",  # Σ per-atom cosine
    "force_cos_count",
    "stress_abs",  # Σ|Δσ_k| over Voigt components, GPa
    "stress_count",
    "e_form_abs",  # |ΔE_form|, eV/atom (one per frame)
    "e_form_sq",
    "e_form_count",
)


HEADLINE = {
    "energy_mae_meV_per_atom": ("energy_abs", "energy_count", MEV),
    "force_mae_meV_per_A": ("force_abs", "force_count", MEV),
    "stress_mae_GPa": ("stress_abs", "stress_count", 1.0),
    "e_form_mae_meV_per_atom": ("e_form_abs", "e_form_count", MEV),
}
# The labels each metric needs (for "null + note" when a dataset lacks them).
METRIC_LABELS = {
    "energy": ("energy_mae_meV_per_atom", "energy_rmse_meV_per_atom"),
    "forces": ("force_mae_meV_per_A", "force_rmse_meV_per_A", "force_cosine"),
    "stress": ("stress_mae_GPa",),
    "formation_energy_per_atom": ("e_form_mae_meV_per_atom", "e_form_rmse_meV_per_atom"),
}


def mae(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> float:
    """Mean absolute error; NaN for an empty set."""
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    return float(np.abs(diff).mean()) if diff.size else float("nan")


def rmse(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> float:
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    return float(np.sqrt((diff**2).mean())) if diff.size else float("nan")


def cosine_per_atom(pred: np.ndarray, true: np.ndarray, min_norm: float = FORCE_COSINE_MIN_NORM) -> np.ndarray:
    """Cosine between predicted and DFT force vectors of each atom, (n, 3) → (m,).

    Atoms where either vector is shorter than `min_norm` eV/Å are left out: a (near) zero
    force has no direction, and relaxed structures have many of them.
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 3)
    true = np.asarray(true, dtype=np.float64).reshape(-1, 3)
    norm_p = np.linalg.norm(pred, axis=1)
    norm_t = np.linalg.norm(true, axis=1)
    keep = (norm_p >= min_norm) & (norm_t >= min_norm)
    return (pred[keep] * true[keep]).sum(axis=1) / (norm_p[keep] * norm_t[keep])


def force_cosine(pred: np.ndarray, true: np.ndarray, min_norm: float = FORCE_COSINE_MIN_NORM) -> float:
    """Mean per-atom cosine similarity (NaN when no atom has a non-zero force)."""
    cos = cosine_per_atom(pred, true, min_norm)
    return float(cos.mean()) if cos.size else float("nan")


def stress_to_gpa(stress_ev_per_a3: Sequence[float] | np.ndarray) -> np.ndarray:
    """eV/Å³ → GPa (ase.units: 1 GPa = ase.units.GPa eV/Å³)."""
    from ase.units import GPa

    return np.asarray(stress_ev_per_a3, dtype=np.float64) / GPa


def row_stats(
    *,
    nsites: int,
    energy_pred: float | None,
    energy_true: float | None,
    forces_pred: Sequence[float] | None,
    forces_true: Sequence[float] | None,
    stress_pred: Sequence[float] | None,
    stress_true: Sequence[float] | None,
    e_form_pred: float | None = None,
    e_form_true: float | None = None,
    record: str = "?",
    min_norm: float = FORCE_COSINE_MIN_NORM,
) -> dict[str, float]:
    """Additive error sums of one predicted frame (zeros where a label or prediction is absent).

    Shape mismatches raise ValueError naming the record and the field.
    """
    out = dict.fromkeys(STAT_COLUMNS, 0.0)
    if _finite(energy_pred) and _finite(energy_true):
        err = (float(energy_pred) - float(energy_true)) / nsites
        out.update(energy_abs=abs(err), energy_sq=err * err, energy_count=1.0)
    if _finite(e_form_pred) and _finite(e_form_true):
        err = float(e_form_pred) - float(e_form_true)
        out.update(e_form_abs=abs(err), e_form_sq=err * err, e_form_count=1.0)
    if forces_pred is not None and forces_true is not None:
        fp = np.asarray(forces_pred, dtype=np.float64)
        ft = np.asarray(forces_true, dtype=np.float64)
        if fp.size != 3 * nsites or ft.size != 3 * nsites:
            raise ValueError(f"record {record!r}, field 'forces': {fp.size} predicted and {ft.size} DFT values, expected {3 * nsites}")
        diff = fp - ft
        cos = cosine_per_atom(fp, ft, min_norm)
        out.update(
            force_abs=float(np.abs(diff).sum()),
            force_sq=float((diff**2).sum()),
            force_count=float(diff.size),
            force_cos=float(cos.sum()),
            force_cos_count=float(cos.size),
        )
    if stress_pred is not None and stress_true is not None:
        sp = np.asarray(stress_pred, dtype=np.float64)
        st = np.asarray(stress_true, dtype=np.float64)
        if sp.size != 6 or st.size != 6:
            raise ValueError(f"record {record!r}, field 'stress': {sp.size} predicted and {st.size} DFT values, expected 6 (Voigt)")
        out.update(stress_abs=float(np.abs(stress_to_gpa(sp - st)).sum()), stress_count=6.0)
    return out


def _finite(value: float | None) -> bool:
    return value is not None and bool(np.isfinite(value))


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def aggregate(stats: Mapping[str, np.ndarray]) -> dict[str, float | None]:
    """Per-set error metrics from per-row sums (None where the set has no such label)."""
    s = {k: float(np.sum(stats[k])) for k in STAT_COLUMNS}
    energy_mae = _ratio(s["energy_abs"], s["energy_count"])
    energy_mse = _ratio(s["energy_sq"], s["energy_count"])
    force_mae = _ratio(s["force_abs"], s["force_count"])
    force_mse = _ratio(s["force_sq"], s["force_count"])
    e_form_mae = _ratio(s["e_form_abs"], s["e_form_count"])
    e_form_mse = _ratio(s["e_form_sq"], s["e_form_count"])
    return {
        "energy_mae_meV_per_atom": None if energy_mae is None else MEV * energy_mae,
        "energy_rmse_meV_per_atom": None if energy_mse is None else MEV * float(np.sqrt(energy_mse)),
        "force_mae_meV_per_A": None if force_mae is None else MEV * force_mae,
        "force_rmse_meV_per_A": None if force_mse is None else MEV * float(np.sqrt(force_mse)),
        "force_cosine": _ratio(s["force_cos"], s["force_cos_count"]),
        "stress_mae_GPa": _ratio(s["stress_abs"], s["stress_count"]),
        "e_form_mae_meV_per_atom": None if e_form_mae is None else MEV * e_form_mae,
        "e_form_rmse_meV_per_atom": None if e_form_mse is None else MEV * float(np.sqrt(e_form_mse)),
    }


def score_model(dataset: str, spec: Any, predictions: Any, params: dict, throughput: dict) -> dict:
    """Score a model's predictions on every split; see `xtalbench.evaluate.scoring.score_model`.

    `predictions`: a table, or the predictions Parquet path (streamed in bounded memory)."""
    from xtalbench.evaluate.scoring import score_model as _score_model

    return _score_model(dataset, spec, predictions, params, throughput)
