"""Powder XRD patterns on a fixed 2θ grid: MD-HIT's structure descriptor.

MD-HIT smooths pymatgen's `XRDCalculator` peaks (Cu Kα) onto 901 points over 0-90° with a
kernel density estimate and compares patterns by Euclidean distance. Here each peak becomes a
Gaussian of fixed width `sigma` (degrees) weighted by its intensity, and the pattern is scaled
to unit L2 norm, so distances lie in [0, √2] whatever the cell size or the intensity scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class XrdFeaturizer:
    """pymatgen Structures → (n, n_points) float array of broadened, normalised XRD patterns."""

    def __init__(
        self,
        two_theta_min: float = 0.0,
        two_theta_max: float = 90.0,
        n_points: int = 901,
        sigma: float = 0.3,
        wavelength: str = "CuKa",
        dtype: str = "float32",
        progress: bool = False,
    ):
        self.two_theta_min = two_theta_min
        self.two_theta_max = two_theta_max
        self.n_points = n_points
        self.sigma = sigma
        self.wavelength = wavelength
        self.dtype = dtype
        self.progress = progress

    def fit(self, X: Any = None, y: Any = None) -> XrdFeaturizer:
        if not self.two_theta_max > self.two_theta_min or self.n_points < 2 or self.sigma <= 0:
            raise ValueError("need two_theta_max > two_theta_min, n_points >= 2 and sigma > 0")
        from pymatgen.analysis.diffraction.xrd import XRDCalculator

        self.grid_ = np.linspace(self.two_theta_min, self.two_theta_max, self.n_points)
        self.calculator_ = XRDCalculator(wavelength=self.wavelength)
        self.n_features_out_ = self.n_points
        return self

    def pattern(self, structure: Any) -> np.ndarray:
        """One structure's broadened pattern (float64, unit norm)."""
        peaks = self.calculator_.get_pattern(
            structure, scaled=False, two_theta_range=(max(self.two_theta_min, 0.0), self.two_theta_max)
        )
        x = np.asarray(peaks.x, dtype=np.float64)
        w = np.asarray(peaks.y, dtype=np.float64)
        profile = np.exp(-0.5 * ((self.grid_[:, None] - x[None, :]) / self.sigma) ** 2) @ w
        norm = np.linalg.norm(profile)
        return profile / norm if norm > 0 else profile

    def transform(self, structures: Sequence[Any]) -> np.ndarray:
        if not hasattr(self, "calculator_"):
            self.fit()
        out = np.empty((len(structures), self.n_points), dtype=self.dtype)
        items = enumerate(structures)
        if self.progress:
            from tqdm import tqdm

            items = tqdm(items, total=len(structures), desc="xrd", unit="structure", leave=False)
        for i, structure in items:
            out[i] = self.pattern(structure)
        return out

    def fit_transform(self, X: Sequence[Any], y: Any = None) -> np.ndarray:
        return self.fit().transform(X)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        keys = ("two_theta_min", "two_theta_max", "n_points", "sigma", "wavelength", "dtype", "progress")
        return {k: getattr(self, k) for k in keys}
