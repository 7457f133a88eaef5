"""The screening card's metrics for one split role: ranking, errors, intervals and decisions.

Stable ⇔ E_hull ≤ threshold. Ranking puts the lowest predicted E_hull first. Decisions from the
conformal interval [lo, hi] of the predicted E_hull: KEEP if hi ≤ threshold (stable with the
interval's confidence), KILL if lo > threshold (unstable), MAYBE otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import spearmanr

KEEP, MAYBE, KILL = "KEEP", "MAYBE", "KILL"


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def decisions(intervals: np.ndarray, threshold: float) -> np.ndarray:
    out = np.full(len(intervals), MAYBE, dtype=object)
    out[intervals[:, 1] <= threshold] = KEEP
    out[intervals[:, 0] > threshold] = KILL
    return out


def enrichment_factor(stable: np.ndarray, order: np.ndarray, fraction: float) -> float | None:
    """(stable share among the top `fraction` by prediction) / (stable share overall)."""
    n_top = max(1, round(fraction * len(stable)))
    prevalence = stable.mean() if len(stable) else 0.0
    if prevalence == 0:
        return None
    return float(stable[order[:n_top]].mean() / prevalence)


def screening_metrics(
    e_form_true: np.ndarray, e_form_pred: np.ndarray, e_hull_true: np.ndarray, e_hull_pred: np.ndarray,
    intervals: np.ndarray | None, threshold: float, top_k: int = 100, ef_fraction: float = 0.1,
) -> dict[str, Any]:
    """Metrics of one role (energies eV/atom; intervals on E_hull, (n, 2) eV/atom)."""
    e_hull_true = np.asarray(e_hull_true, dtype=np.float64)
    e_hull_pred = np.asarray(e_hull_pred, dtype=np.float64)
    n = len(e_hull_true)
    stable = e_hull_true <= threshold
    order = np.argsort(e_hull_pred, kind="stable")
    rho = spearmanr(e_hull_pred, e_hull_true).statistic if n > 2 else np.nan
    out: dict[str, Any] = {
        "n": n,
        "spearman_rho": None if not np.isfinite(rho) else float(rho),
        "e_form_mae_meV_per_atom": float(np.mean(np.abs(np.asarray(e_form_pred) - np.asarray(e_form_true))) * 1000) if n else None,
        f"enrichment_factor_{int(ef_fraction * 100)}pct": enrichment_factor(stable, order, ef_fraction) if n else None,
        f"stable_fraction_top{top_k}": float(stable[order[:top_k]].mean()) if n else None,
        "prevalence": float(stable.mean()) if n else None,
    }
    if intervals is not None:
        from xtalbench.finetune.conformal import coverage_and_width

        cw = coverage_and_width(e_hull_true, intervals)
        out["coverage"], out["interval_width_meV_per_atom"] = cw["coverage"], None if cw["median_width"] is None else cw["median_width"] * 1000
        d = decisions(intervals, threshold)
        keep, kill = d == KEEP, d == KILL
        out.update({
            "n_keep": int(keep.sum()), "n_maybe": int((d == MAYBE).sum()), "n_kill": int(kill.sum()),
            "keep_precision": _ratio(int((keep & stable).sum()), int(keep.sum())),
            "keep_recall": _ratio(int((keep & stable).sum()), int(stable.sum())),
            "kill_precision": _ratio(int((kill & ~stable).sum()), int(kill.sum())),
            "false_kill_rate": _ratio(int((kill & stable).sum()), int(stable.sum())),
        })
    return out


def bootstrap_mae_ci(abs_errors: np.ndarray, groups: np.ndarray, n_bootstrap: int, seed: int) -> list[float] | None:
    """95% CI of the MAE by resampling materials (all rows of a drawn material count)."""
    if len(abs_errors) == 0:
        return None
    from xtalbench.evaluate.gap import _replicates

    _, inverse = np.unique(groups, return_inverse=True)
    maes = _replicates(np.bincount(inverse, weights=abs_errors), np.bincount(inverse).astype(np.float64), n_bootstrap, np.random.default_rng(seed))
    return [float(np.percentile(maes, 2.5)), float(np.percentile(maes, 97.5))]
