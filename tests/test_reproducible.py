"""Outputs that must not depend on the BLAS kernel (issue 11, "reproducible anywhere").

A test cannot switch OpenBLAS kernels (OPENBLAS_CORETYPE is read once, at load; it is never set
in tests). What a kernel changes is the summation order and FMA use of a matmul, so these tests
check the property that makes the code immune: fetch geometry equals a pure-Python evaluation
(plain IEEE doubles, no BLAS, a fixed order) bit for bit, and the kernel-PCA map gives the same
bytes when the features' columns are permuted (which reorders every BLAS sum).
`scripts/check_blas_kernels.sh` runs the real datasets under two kernels.
"""

from __future__ import annotations

import numpy as np
import pytest

from xtalbench.core.schema import cart_to_frac, det3, frac_to_cart, structure_hash
from xtalbench.split.embedding import FEATURE_GRID, KernelMap


def python_frac_to_cart(frac, cell) -> list[list[float]]:
    """Reference: Python floats, (f0*a + f1*b) + f2*c per component."""
    return [[(f[0] * cell[0][k] + f[1] * cell[1][k]) + f[2] * cell[2][k] for k in range(3)] for f in frac]


def random_cell(rng) -> np.ndarray:
    return np.diag(rng.uniform(3, 9, 3)) + rng.uniform(-1.5, 1.5, (3, 3))


def test_frac_to_cart_is_the_plain_double_evaluation_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        cell, frac = random_cell(rng), rng.random((17, 3))
        got = frac_to_cart(frac, cell)
        assert got.tobytes() == np.array(python_frac_to_cart(frac.tolist(), cell.tolist())).tobytes()
        np.testing.assert_allclose(got, frac @ cell, rtol=1e-14, atol=1e-13)


def test_cart_to_frac_inverts_and_det3_is_the_determinant() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        cell, frac = random_cell(rng), rng.random((9, 3))
        np.testing.assert_allclose(cart_to_frac(frac_to_cart(frac, cell), cell), frac, atol=1e-12)
        assert det3(cell) == pytest.approx(np.linalg.det(cell), rel=1e-12)
    # the cubic 4 Å cell: hand values
    assert det3(np.eye(3) * 4.0) == 64.0
    np.testing.assert_array_equal(cart_to_frac([[2.0, 1.0, 3.0]], np.eye(3) * 4.0), [[0.5, 0.25, 0.75]])
    with pytest.raises(np.linalg.LinAlgError):
        cart_to_frac([[0.0, 0.0, 0.0]], [[1, 0, 0], [2, 0, 0], [0, 0, 1]])


def test_structure_hash_keeps_its_invariances() -> None:
    cell = [4.0, 0, 0, 0, 4.0, 0, 0, 0, 4.0]
    a = structure_hash(cell, [11, 17], [0, 0, 0, 2, 2, 2])
    assert a == structure_hash(cell, [17, 11], [2, 2, 2, 0, 0, 0])  # site order
    assert a == structure_hash(cell, [11, 17], [4, 0, 0, 2, 2, -2])  # lattice translations
    assert a != structure_hash(cell, [11, 17], [0, 0, 0, 2, 2, 1.9])


def clustered_features(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (4, d))
    return (centres[rng.integers(4, size=n)] + rng.normal(0, 1, (n, d))).astype(np.float32)


@pytest.mark.parametrize("n, exact_max_rows", [(300, 5000), (700, 5000), (700, 200)], ids=["dense", "randomized", "nystroem"])
def test_kernel_map_is_the_same_bytes_whatever_the_summation_order(n: int, exact_max_rows: int) -> None:
    X = clustered_features(n, 64, seed=n)
    perm = np.random.default_rng(5).permutation(X.shape[1])
    kw = dict(n_components=6, exact_max_rows=exact_max_rows, n_landmarks=150, random_state=0)
    a = KernelMap(**kw).fit(X)
    b = KernelMap(**kw).fit(X[:, perm])
    assert a.gamma_ == b.gamma_
    assert a.transform(X).tobytes() == b.transform(X[:, perm]).tobytes()


def test_median_gamma_is_that_of_the_snapped_standardised_features() -> None:
    X = clustered_features(120, 5, seed=2).astype(np.float64)
    z = (X - X.mean(axis=0)) / X.std(axis=0)
    q = np.rint(z * FEATURE_GRID) / FEATURE_GRID  # the grid of the module docstring
    d2 = ((q[:, None] - q[None]) ** 2).sum(-1)[np.triu_indices(len(q), 1)]
    kmap = KernelMap(n_components=2).fit(X)
    assert kmap.gamma_ == pytest.approx(1 / np.median(d2), rel=1e-12)
    assert KernelMap(n_components=2, gamma=0.05).fit(X).gamma_ == 0.05


def test_xrd_peaks_match_pymatgen_without_its_matmuls() -> None:
    """The BLAS-free peaks equal pymatgen's `get_pattern` (the reference) on real MP-20 CIFs."""
    import warnings
    from pathlib import Path

    import pyarrow.parquet as pq
    from pymatgen.analysis.diffraction.xrd import XRDCalculator
    from pymatgen.core import Structure

    from xtalbench.descriptors.xrd import xrd_peaks

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "mp20-subset" / "mp20_subset.parquet"
    if not data.exists():
        pytest.skip(f"{data} not present")
    calculator = XRDCalculator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structures = [Structure.from_str(c, fmt="cif") for c in pq.read_table(data, columns=["cif"]).slice(0, 25)["cif"].to_pylist()]
    for structure in structures:
        ref = calculator.get_pattern(structure, scaled=False, two_theta_range=(0.0, 90.0))
        x, y = xrd_peaks(calculator, structure, (0.0, 90.0))
        np.testing.assert_allclose(x, ref.x, rtol=1e-12)
        np.testing.assert_allclose(y, ref.y, rtol=1e-10)
