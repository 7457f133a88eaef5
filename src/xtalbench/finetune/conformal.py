"""Split-conformal intervals (crepes), globally and per cluster with a global fallback.

Why per cluster (Mondrian): a LOCO test cluster is absent from calibration, so per-cluster
intervals show how far the global guarantee holds only under exchangeability. Clusters with
fewer than `min_cluster_size` calibration points, or none, use the global interval.
"""

from __future__ import annotations

import numpy as np
from crepes import ConformalRegressor

from xtalbench.core.errors import XtalbenchError


class ConformalError(XtalbenchError, ValueError):
    """Calibration data that cannot give an interval (empty, NaN)."""


class SplitConformal:
    """`fit(residuals_cal, clusters_cal)` then `predict_interval(y_hat, clusters)` → (n, 2).

    Parameters: `coverage` (target, e.g. 0.9), `min_cluster_size` (calibration points a cluster
    needs for its own quantile; below it the global one applies; 0 disables Mondrian).
    """

    def __init__(self, coverage: float = 0.9, min_cluster_size: int = 30):
        self.coverage = coverage
        self.min_cluster_size = min_cluster_size

    def fit(self, residuals: np.ndarray, clusters: np.ndarray | None = None) -> SplitConformal:
        residuals = np.asarray(residuals, dtype=np.float64)
        if residuals.size == 0 or not np.all(np.isfinite(residuals)):
            raise ConformalError(f"conformal calibration needs finite residuals; got {residuals.size} values")
        self.global_ = ConformalRegressor().fit(residuals)
        self.by_cluster_: dict[int, ConformalRegressor] = {}
        if clusters is not None and self.min_cluster_size > 0:
            clusters = np.asarray(clusters)
            for value in np.unique(clusters[clusters >= 0]):
                mask = clusters == value
                if mask.sum() >= self.min_cluster_size:
                    self.by_cluster_[int(value)] = ConformalRegressor().fit(residuals[mask])
        return self

    def predict_interval(self, y_hat: np.ndarray, clusters: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Intervals (n, 2) and the source of each: 'global' or 'cluster'."""
        y_hat = np.asarray(y_hat, dtype=np.float64)
        intervals = self.global_.predict_int(y_hat, confidence=self.coverage)
        source = np.full(len(y_hat), "global", dtype=object)
        if clusters is not None and self.by_cluster_:
            clusters = np.asarray(clusters)
            for value, regressor in self.by_cluster_.items():
                mask = clusters == value
                if mask.any():
                    intervals[mask] = regressor.predict_int(y_hat[mask], confidence=self.coverage)
                    source[mask] = "cluster"
        return intervals, source


def coverage_and_width(y: np.ndarray, intervals: np.ndarray) -> dict[str, float | None]:
    """Empirical coverage and median width of intervals (n, 2) on targets y."""
    y = np.asarray(y, dtype=np.float64)
    if y.size == 0:
        return {"coverage": None, "median_width": None}
    inside = (y >= intervals[:, 0]) & (y <= intervals[:, 1])
    return {"coverage": float(inside.mean()), "median_width": float(np.median(intervals[:, 1] - intervals[:, 0]))}
