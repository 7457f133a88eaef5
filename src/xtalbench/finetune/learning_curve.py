"""Learning curves: MAE(N) = A·N^−α + B fitted with bootstrap CIs; N needed for a target MAE."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import curve_fit

MAX_N = 1e12  # training sizes above this are reported as unreachable (None)


def power_law(n: np.ndarray, a: float, alpha: float, b: float = 0.0) -> np.ndarray:
    return a * np.power(np.asarray(n, dtype=np.float64), -alpha) + b


def fit_power_law(n: np.ndarray, mae: np.ndarray, offset: bool = True) -> dict[str, float]:
    """Least-squares fit of MAE = A·N^−α (+ B ≥ 0 when `offset`).

    Without the offset this is the straight line of log MAE against log N (closed form); with it,
    a bounded nonlinear fit started from that line.
    """
    n = np.asarray(n, dtype=np.float64)
    mae = np.asarray(mae, dtype=np.float64)
    slope, intercept = np.polyfit(np.log(n), np.log(mae), 1)
    a0, alpha0 = float(np.exp(intercept)), float(-slope)
    if not offset or len(n) < 3:
        return {"A": a0, "alpha": alpha0, "B": 0.0}
    try:
        (a, alpha, b), _ = curve_fit(
            power_law, n, mae, p0=(a0, alpha0, 0.0), bounds=([0.0, 0.0, 0.0], [np.inf, 5.0, float(mae.min())]), maxfev=20000
        )
    except (RuntimeError, ValueError):
        return {"A": a0, "alpha": alpha0, "B": 0.0}
    return {"A": float(a), "alpha": float(alpha), "B": float(b)}


def n_for_target(fit: dict[str, float], target: float) -> float | None:
    """Training size at which the fitted curve reaches `target` (None if it never does)."""
    if target <= fit["B"] or fit["alpha"] <= 0 or fit["A"] <= 0:
        return None
    log_n = -np.log((target - fit["B"]) / fit["A"]) / fit["alpha"]
    return float(np.exp(log_n)) if log_n < np.log(MAX_N) else None  # beyond any dataset: unreachable


def bootstrap_fit(
    sizes: np.ndarray, abs_errors: list[np.ndarray], groups: list[np.ndarray], n_bootstrap: int, seed: int, target: float | None, offset: bool = True
) -> dict[str, Any]:
    """Fit on the test MAEs per size; CIs by resampling test materials (the same draw for every size).

    `abs_errors[i]` are the absolute errors at `sizes[i]` of the same test rows, whose material
    ids are `groups[i]` (material-level bootstrap).
    """
    mae = np.array([e.mean() for e in abs_errors])
    fit = fit_power_law(sizes, mae, offset=offset)
    rng = np.random.default_rng(seed)
    materials, inverse = np.unique(groups[0], return_inverse=True)
    draws: dict[str, list[float]] = {"alpha": [], "A": [], "B": [], "n_target": []}
    for _ in range(n_bootstrap):
        weights = np.bincount(rng.integers(0, len(materials), len(materials)), minlength=len(materials))[inverse]
        if weights.sum() == 0:
            continue
        boot = np.array([(e * weights).sum() / weights.sum() for e in abs_errors])
        f = fit_power_law(sizes, boot, offset=offset)
        for key in ("alpha", "A", "B"):
            draws[key].append(f[key])
        if target is not None and target < mae[0]:
            nt = n_for_target(f, target)
            draws["n_target"].append(np.inf if nt is None else nt)
    ci = {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in draws.items() if v}
    needed = n_for_target(fit, target) if target is not None else None
    met = target is not None and target >= mae[0]  # already met at the smallest size: no extrapolation to report
    return {
        "sizes": [int(s) for s in sizes],
        "mae": [float(m) for m in mae],
        "fit": fit,
        "ci95": ci,
        "target_mae": target,
        "target_met_at_smallest_size": bool(met),
        "n_for_target": None if met else needed,
    }
