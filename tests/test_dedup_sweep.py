"""The dedup sweep's memory bound: candidate pairs compared in chunks, same answer as all at once."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from xtalbench.dedup.stage import chunked_pair_distances, greedy_select


def naive_greedy(X: np.ndarray, threshold: float) -> np.ndarray:
    """MD-HIT's loop, written independently: keep row i iff every kept row is farther than threshold."""
    kept: list[int] = []
    for i in range(len(X)):
        if all(np.sqrt(((X[i].astype(np.float64) - X[j]) ** 2).sum()) > threshold for j in kept):
            kept.append(i)
    out = np.zeros(len(X), dtype=bool)
    out[kept] = True
    return out


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    """Unit-norm rows in a few tight families, so every threshold drops something."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(2, n // 8), d))
    X = centres[rng.integers(len(centres), size=n)] + rng.normal(scale=0.15, size=(n, d))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("threshold", [0.1, 0.5, 1.0, 1.3])
def test_chunked_greedy_equals_unbounded_and_the_naive_loop(threshold: float) -> None:
    X = unit_rows(300, 40, seed=1)
    tiny = greedy_select(X, threshold, "euclidean", block_size=32, pair_budget=200, epsilon=0.0)  # 5 pairs per chunk
    whole = greedy_select(X, threshold, "euclidean", block_size=32, pair_budget=None, epsilon=0.0)
    np.testing.assert_array_equal(tiny.kept, whole.kept)
    np.testing.assert_array_equal(tiny.representative, whole.representative)
    assert tiny.distance.tobytes() == whole.distance.tobytes()
    np.testing.assert_array_equal(tiny.kept, naive_greedy(X, threshold))


def test_chunked_pair_distances_are_the_same_bits() -> None:
    rng = np.random.default_rng(2)
    A, B = rng.normal(size=(50, 901)), rng.normal(size=(70, 901))
    ia, ib = rng.integers(50, size=1000), rng.integers(70, size=1000)
    expected = np.sqrt(((A[ia] - B[ib]) ** 2).sum(axis=1))
    for budget in (901, 901 * 7 + 3, None):
        got = chunked_pair_distances(A, ia, B, ib, "euclidean", budget)
        np.testing.assert_allclose(got, expected, rtol=1e-12)
        assert got.tobytes() == chunked_pair_distances(A, ia, B, ib, "euclidean", None).tobytes()


def _peak_mb(fn) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def test_a_large_sweep_threshold_stays_within_the_pair_budget() -> None:
    """250 XRD-sized rows at a threshold where nearly every kept row is a candidate: the old path
    holds block x kept x 901 values several times over; the bounded one a few 32 MB chunks."""
    X = unit_rows(250, 901, seed=3)
    budget = 500_000  # values per chunk: 4 MB per float64 temporary
    bounded = _peak_mb(lambda: greedy_select(X, 0.8, "euclidean", pair_budget=budget))
    unbounded = _peak_mb(lambda: greedy_select(X, 0.8, "euclidean", pair_budget=None))
    inputs_mb = X.size * 8 * 2 / 1e6  # float64 copy + its visit-order view
    assert bounded < inputs_mb + 10 * budget * 8 / 1e6 + 10, (bounded, unbounded)  # measured 34 MB
    assert unbounded > 5 * bounded, (bounded, unbounded)  # measured 900 MB
