"""LOCO-vs-random generalisation gap: ratio of test MAEs with a group bootstrap CI.

The unit of resampling is the material (the split's group key), not the frame: the frames of
one material (a relaxation trajectory) are correlated, and resampling them independently would
give falsely narrow intervals. Each strategy's materials are resampled independently (the two
test sets are independent samples), with replacement, `n_bootstrap` times from one seeded
generator; the interval is the percentile interval of the replicated ratios.
"""

from __future__ import annotations

import numpy as np

MAX_CELLS_PER_CHUNK = 2_000_000  # bootstrap index matrix cells held in memory at once


def _replicates(sums: np.ndarray, counts: np.ndarray, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """MAE of `n_bootstrap` resamples of the groups (Σ sums / Σ counts of the drawn groups)."""
    n = len(sums)
    out = np.empty(n_bootstrap, dtype=np.float64)
    chunk = max(1, MAX_CELLS_PER_CHUNK // max(n, 1))
    for start in range(0, n_bootstrap, chunk):
        stop = min(n_bootstrap, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    return out


def bootstrap_mae_ratio(
    num_sums: np.ndarray,
    num_counts: np.ndarray,
    den_sums: np.ndarray,
    den_counts: np.ndarray,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, float | int | None]:
    """MAE_num / MAE_den with a percentile bootstrap CI over groups.

    Inputs are per-group (per-material) sums of absolute errors and the number of errors
    summed; groups with no errors are ignored. Returns None values when either side has no
    data or the denominator MAE is 0.
    """
    num_sums, num_counts = np.asarray(num_sums, float), np.asarray(num_counts, float)
    den_sums, den_counts = np.asarray(den_sums, float), np.asarray(den_counts, float)
    keep_n, keep_d = num_counts > 0, den_counts > 0
    num_sums, num_counts = num_sums[keep_n], num_counts[keep_n]
    den_sums, den_counts = den_sums[keep_d], den_counts[keep_d]
    result: dict[str, float | int | None] = {
        "ratio": None,
        "ci_low": None,
        "ci_high": None,
        "ci_level": ci,
        "n_bootstrap": int(n_bootstrap),
        "n_materials_numerator": int(len(num_sums)),
        "n_materials_denominator": int(len(den_sums)),
        "mae_numerator": None,
        "mae_denominator": None,
    }
    if not len(num_sums) or not len(den_sums):
        return result
    mae_num = num_sums.sum() / num_counts.sum()
    mae_den = den_sums.sum() / den_counts.sum()
    result.update(mae_numerator=float(mae_num), mae_denominator=float(mae_den))
    if mae_den <= 0:
        return result
    result["ratio"] = float(mae_num / mae_den)
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        rep_num = _replicates(num_sums, num_counts, n_bootstrap, rng)
        rep_den = _replicates(den_sums, den_counts, n_bootstrap, rng)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = rep_num / rep_den
        ratios = ratios[np.isfinite(ratios)]
        if len(ratios):
            alpha = (1 - ci) / 2
            low, high = np.quantile(ratios, [alpha, 1 - alpha])
            result.update(ci_low=float(low), ci_high=float(high))
    return result
