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
        """One structure's broadened pattern (float64, unit norm), without BLAS: same bits on any CPU."""
        x, w = xrd_peaks(self.calculator_, structure, (max(self.two_theta_min, 0.0), self.two_theta_max))
        profile = (np.exp(-0.5 * ((self.grid_[:, None] - x[None, :]) / self.sigma) ** 2) * w[None, :]).sum(axis=1)
        norm = float(np.sqrt(np.square(profile).sum()))
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


def xrd_peaks(calculator: Any, structure: Any, two_theta_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(two_theta, unscaled intensity) of the peaks pymatgen's `XRDCalculator.get_pattern` gives
    for an ordered structure (no symprec, no Debye-Waller factors), computed the same way except
    that g·r and the sum over sites are elementwise numpy in a fixed order instead of matmuls:
    pymatgen's `@` goes to BLAS, whose kernel changes the intensities' last bits by CPU.
    """
    import math

    from pymatgen.analysis.diffraction.core import (
        AbstractDiffractionPatternCalculator as Core,
    )
    from pymatgen.analysis.diffraction.xrd import ATOMIC_SCATTERING_PARAMS

    wavelength = calculator.wavelength
    min_r, max_r = (2 * math.sin(math.radians(t / 2)) / wavelength for t in two_theta_range)
    recip_pts = structure.lattice.reciprocal_lattice_crystallographic.get_points_in_sphere([[0, 0, 0]], [0, 0, 0], max_r)
    if min_r:
        recip_pts = [pt for pt in recip_pts if pt[1] >= min_r]
    if not recip_pts:
        return np.empty(0), np.empty(0)
    hkl = np.round([pt[0] for pt in recip_pts]).astype(int)
    g = _g_lengths(hkl, structure.lattice.matrix)  # not pt[1]: pymatgen's lengths go through BLAS
    h, k, ell = hkl.T
    half = (h > 0) | ((h == 0) & (k > 0)) | ((h == 0) & (k == 0) & (ell > 0))  # Friedel: I(g) = I(-g)
    hkl, g = hkl[half], g[half]
    order = np.lexsort((-hkl[:, 2], -hkl[:, 1], -hkl[:, 0], g))
    hkl, g = hkl[order].astype(float), g[order]
    theta = np.arcsin(np.clip(wavelength * g / 2, -1, 1))
    s2 = (g / 2) ** 2
    groups: dict[str, tuple[int, np.ndarray, list, list]] = {}
    for site in structure:
        for sp, occu in site.species.items():
            if sp.symbol not in ATOMIC_SCATTERING_PARAMS:
                raise ValueError(f"Unable to calculate XRD pattern as there is no scattering coefficients for {sp.symbol}.")
            z, coeff, frac, occus = groups.setdefault(sp.symbol, (sp.Z, np.asarray(ATOMIC_SCATTERING_PARAMS[sp.symbol]), [], []))
            frac.append(site.frac_coords)
            occus.append(occu)
    f_hkl = np.zeros(len(g), dtype=np.complex128)
    for z, coeff, frac, occus in groups.values():
        fs = z - 41.78214 * s2 * np.sum(coeff[:, 0] * np.exp(-coeff[:, 1] * s2[:, None]), axis=1)
        f = np.asarray(frac, dtype=np.float64)  # (m, 3)
        g_dot_r = (hkl[:, 0:1] * f[:, 0] + hkl[:, 1:2] * f[:, 1]) + hkl[:, 2:3] * f[:, 2]  # (M, m)
        f_hkl += fs * (np.exp(2j * math.pi * g_dot_r) * np.asarray(occus, dtype=np.float64)).sum(axis=1)
    i_hkl = (f_hkl * f_hkl.conjugate()).real
    cos2t, sint, cost = np.cos(2 * theta), np.sin(theta), np.cos(theta)
    intensities = 2 * i_hkl * (1 + cos2t**2) / (sint**2 * cost)
    two_thetas = np.degrees(2 * theta)
    peaks: dict[int, list[float]] = {}
    for key, intensity, two_theta in zip(np.round(two_thetas / Core.TWO_THETA_TOL).astype(int), intensities, two_thetas):
        if key in peaks:
            peaks[key][0] += float(intensity)
        else:
            peaks[key] = [float(intensity), float(two_theta)]
    top = max(v[0] for v in peaks.values())
    kept = [peaks[key] for key in sorted(peaks) if peaks[key][0] / top * 100 > Core.SCALED_INTENSITY_TOL]
    return np.array([v[1] for v in kept]), np.array([v[0] for v in kept])


def _g_lengths(hkl: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """|g_hkl| with the crystallographic reciprocal lattice inv(A).T (no 2π), without BLAS/LAPACK."""
    from xtalbench.core.schema import _cofactors, det3

    recip = _cofactors(np.asarray(matrix, dtype=np.float64)) / det3(matrix)  # inv(A).T = cofactors / det
    h = hkl.astype(np.float64)
    vec = (h[:, 0:1] * recip[0] + h[:, 1:2] * recip[1]) + h[:, 2:3] * recip[2]
    return np.sqrt((vec[:, 0] * vec[:, 0] + vec[:, 1] * vec[:, 1]) + vec[:, 2] * vec[:, 2])
