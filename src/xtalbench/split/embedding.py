"""The kernel-PCA map: standardise → RBF kernel PCA, exact or Nyström-approximated.

Exact `KernelPCA` needs the n×n kernel (n=20,000 is ~5 GB), so above `exact_max_rows` fit
rows the map is a Nyström feature map on `n_landmarks` seeded landmarks followed by linear PCA:
memory O(n·n_landmarks) and the fit rows are streamed, so they never need to sit in memory.

`fit_stream`/`transform_stream` take a chunk source: a callable returning an iterator of
`(row_indices, X_chunk)`; `fit`/`transform` wrap an in-memory array.

Reproducible on any CPU: BLAS kernels (picked by CPU, or OPENBLAS_CORETYPE) differ in the last
bits of a matmul, and kernel PCA + KMeans turned those bits into different clusters (988/581/
412/315 vs 975/595/410/316 on mp20). So
- standardised features are snapped to multiples of 1/FEATURE_GRID and held as integers (in
  float64): every dot product and squared distance behind the RBF kernel and the median gamma
  is then an exact integer (|z| <= sqrt(n) for a standardised column, so sums stay far below
  2^53) and identical whatever the kernel's summation order or FMA use;
- coordinates (and the Nyström features) are rounded to COORD_DECIMALS after each BLAS/LAPACK
  step (eigen-solver, projection), far above its last-bit noise, so the clustering sees the
  same numbers. A value within that noise of a rounding boundary can still differ (odds of
  order 1e-6 per value): `scripts/check_blas_kernels.sh` checks the real datasets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

ChunkSource = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]
GAMMA_SAMPLE = 1000
FEATURE_GRID = 1024  # standardised features snap to multiples of 1/1024 (~1e-3 standard deviations)
COORD_DECIMALS = 8  # kernel-PCA coordinates (O(0.01-1)) and Nyström features, rounded after BLAS


def median_heuristic_gamma(X: np.ndarray, random_state: int = 0, sample: int = GAMMA_SAMPLE) -> float:
    """gamma = 1 / median of squared pairwise distances (seeded subsample of `sample` rows)."""
    X = np.asarray(X, dtype=np.float64)
    if len(X) > sample:
        X = X[np.sort(np.random.default_rng(random_state).choice(len(X), sample, replace=False))]
    sq = np.einsum("ij,ij->i", X, X)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * X @ X.T, 0.0)
    upper = d2[np.triu_indices(len(X), k=1)]
    upper = upper[upper > 0]
    if upper.size == 0:
        return 1.0
    return float(1.0 / np.median(upper))


def array_source(X: np.ndarray, chunk_rows: int = 4096) -> ChunkSource:
    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(X), chunk_rows):
            stop = min(start + chunk_rows, len(X))
            yield np.arange(start, stop), np.asarray(X[start:stop])

    return chunks


class KernelMap:
    """Standardise → RBF kernel PCA (exact up to `exact_max_rows` fit rows, Nyström above)."""

    def __init__(
        self,
        n_components: int = 10,
        gamma: float | None = None,
        exact_max_rows: int = 5000,
        n_landmarks: int = 1000,
        random_state: int = 0,
    ):
        self.n_components = n_components
        self.gamma = gamma
        self.exact_max_rows = exact_max_rows
        self.n_landmarks = n_landmarks
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: Any = None) -> KernelMap:
        return self.fit_stream(array_source(X), np.arange(len(X)))

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self.transform_stream(array_source(X), len(X))

    def fit_transform(self, X: np.ndarray, y: Any = None) -> np.ndarray:
        return self.fit(X).transform(X)

    # -- streaming ---------------------------------------------------------------------
    def fit_stream(self, source: ChunkSource, rows: np.ndarray) -> KernelMap:
        """Fit on the rows `rows` (indices into the source) of a chunked source."""
        from sklearn.preprocessing import StandardScaler

        rows = np.unique(np.asarray(rows, dtype=np.int64))
        n = len(rows)
        if n < 3:
            raise ValueError(f"kernel PCA needs at least 3 rows, got {n}")
        self.scaler_ = StandardScaler()
        for X in _select(source, rows):
            self.scaler_.partial_fit(np.asarray(X, dtype=np.float64))
        self.n_fit_rows_ = n
        self.exact_ = n <= self.exact_max_rows
        rng = np.random.default_rng(self.random_state)
        self.fit_rows_ = rows
        if self.exact_:
            Z = self._gather(source, rows)
            self.fit_coords_ = self._fit_exact(Z)
        else:
            m = min(self.n_landmarks, n)
            landmarks = np.sort(rng.choice(rows, m, replace=False))
            L = self._gather(source, landmarks)
            self.gamma_ = self._gamma(L)
            from sklearn.decomposition import PCA
            from sklearn.kernel_approximation import Nystroem

            self.nystroem_ = Nystroem(kernel="rbf", gamma=self.gamma_ / FEATURE_GRID**2, n_components=m, random_state=self.random_state).fit(L)
            F = np.empty((n, m), dtype=np.float32)  # filled chunk by chunk: no float64 copy of all fit rows
            done = 0
            for X in _select(source, rows):
                F[done : done + len(X)] = self._nystroem_features(self._scale(X))
                done += len(X)
            k = min(self.n_components, F.shape[1], n - 1)
            self.pca_ = PCA(n_components=k, svd_solver="randomized", random_state=self.random_state).fit(F)
            self.method_ = f"nystroem({m} landmarks) + PCA"
        self.n_components_ = int(self.pca_.n_components_ if not self.exact_ else self.kpca_.eigenvalues_.shape[0])
        return self

    def _gamma(self, Z: np.ndarray) -> float:
        """gamma in standardised units: given, or 1 / median squared distance (exact on the grid)."""
        if self.gamma is not None:
            return float(self.gamma)
        return median_heuristic_gamma(Z, self.random_state) * FEATURE_GRID**2

    def _fit_exact(self, Z: np.ndarray) -> np.ndarray:
        from sklearn.decomposition import KernelPCA

        self.gamma_ = self._gamma(Z)
        k = min(self.n_components, len(Z) - 1)
        solver = "dense" if len(Z) <= 500 else "randomized"
        # Z is in grid units: the kernel's gamma is gamma_ / FEATURE_GRID² (same kernel values)
        self.kpca_ = KernelPCA(n_components=k, kernel="rbf", gamma=self.gamma_ / FEATURE_GRID**2, eigen_solver=solver, random_state=self.random_state)
        coords = _canonical(self.kpca_.fit_transform(Z))
        self.method_ = "exact kernel PCA"
        return coords

    def _nystroem_features(self, Z: np.ndarray) -> np.ndarray:
        return _canonical(self.nystroem_.transform(Z))

    def transform_stream(self, source: ChunkSource, n_rows: int, reuse_fit: bool = False) -> np.ndarray:
        """Coordinates of every row of the source. With `reuse_fit` (the source is the one fitted
        on), exact-mode fit rows take their coordinates from the fit instead of a second kernel."""
        out = np.zeros((n_rows, self.n_components_), dtype=np.float64)
        cached = reuse_fit and self.exact_
        for idx, X in source():
            todo = ~np.isin(idx, self.fit_rows_, assume_unique=True) if cached else np.ones(len(idx), bool)
            if not todo.any():
                continue
            Z = self._scale(np.asarray(X)[todo])
            if self.exact_:
                out[idx[todo]] = _canonical(self.kpca_.transform(Z))
            else:
                out[idx[todo]] = _canonical(self.pca_.transform(self._nystroem_features(Z)))
        if cached:
            out[self.fit_rows_] = self.fit_coords_
        return _fix_signs(out)

    def _scale(self, X: np.ndarray) -> np.ndarray:
        """Standardised features in grid units: integers (as float64), see the module docstring."""
        return np.rint(self.scaler_.transform(np.asarray(X, dtype=np.float64)) * FEATURE_GRID)

    def _gather(self, source: ChunkSource, rows: np.ndarray) -> np.ndarray:
        parts = [self._scale(X) for X in _select(source, rows)]
        return np.concatenate(parts)

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.method_,
            "gamma": self.gamma_,
            "gamma_rule": "given" if self.gamma is not None else "1/median squared distance (standardised)",
            "n_components": self.n_components_,
            "fit_rows": self.n_fit_rows_,
        }


def _select(source: ChunkSource, rows: np.ndarray) -> Iterator[np.ndarray]:
    """Rows `rows` (sorted) of a chunked source, chunk by chunk, in source order."""
    for idx, X in source():
        mask = np.isin(idx, rows, assume_unique=True)
        if mask.any():
            yield np.asarray(X)[mask]


def _canonical(Y: np.ndarray) -> np.ndarray:
    """Round away a BLAS/LAPACK step's last-bit noise (+0.0 turns -0.0 into 0.0)."""
    return np.round(np.asarray(Y, dtype=np.float64), COORD_DECIMALS) + 0.0


def _fix_signs(Y: np.ndarray) -> np.ndarray:
    """Eigenvector signs are arbitrary: make the largest-magnitude entry of each axis positive."""
    if len(Y) == 0:
        return Y
    pivot = np.abs(Y).argmax(axis=0)
    signs = np.sign(Y[pivot, np.arange(Y.shape[1])])
    signs[signs == 0] = 1
    return Y * signs
