"""LOCO/random gap: ratio of MAEs with a material-level bootstrap CI."""

from __future__ import annotations

import numpy as np
import pytest

from xtalbench.evaluate.gap import bootstrap_mae_ratio


def groups(seed: int, n: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 6, size=n).astype(float)
    sums = np.abs(rng.normal(scale, scale / 2, size=n)) * counts
    return sums, counts


def test_ratio_ci_contains_point_and_is_deterministic():
    num, den = groups(1, 60, 2.0), groups(2, 80, 1.0)
    a = bootstrap_mae_ratio(*num, *den, n_bootstrap=500, seed=7)
    expected = (num[0].sum() / num[1].sum()) / (den[0].sum() / den[1].sum())
    assert a["ratio"] == pytest.approx(expected)
    assert a["ci_low"] < a["ratio"] < a["ci_high"]
    assert a == bootstrap_mae_ratio(*num, *den, n_bootstrap=500, seed=7)
    b = bootstrap_mae_ratio(*num, *den, n_bootstrap=500, seed=8)
    assert (b["ci_low"], b["ci_high"]) != (a["ci_low"], a["ci_high"])
    assert a["n_materials_numerator"] == 60 and a["n_materials_denominator"] == 80


def test_resamples_materials_not_frames():
    # one material per side: every replicate draws the same material, so the interval collapses
    # to the point even though that material's frames have different errors
    a = bootstrap_mae_ratio(np.array([10.0]), np.array([5.0]), np.array([4.0]), np.array([4.0]), n_bootstrap=200, seed=0)
    assert a["ratio"] == pytest.approx(2.0)
    assert a["ci_low"] == pytest.approx(2.0) and a["ci_high"] == pytest.approx(2.0)


def test_empty_side_gives_null_ratio():
    a = bootstrap_mae_ratio(np.array([1.0]), np.array([1.0]), np.array([0.0]), np.array([0.0]), n_bootstrap=10)
    assert a["ratio"] is None and a["n_materials_denominator"] == 0
