"""Per-structure SOAP vectors with one fixed species layout for a whole dataset.

dscribe orders SOAP columns by the species it was built with. Building it per structure (as
some SOAP-LOCO code does) makes column j mean a different species pair in every row; here the
species list is fixed once, at `fit`, so column j means the same thing in every row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

COMPRESSION_MODES = ("off", "mu1nu1", "mu2", "crossover")
AVERAGE_MODES = ("inner", "outer")


def gto_basis(r_cut: float, n_max: int, l_max: int, digits: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """dscribe's GTO radial basis (`SOAP.get_basis_gto`: decay exponents alphas, Löwdin
    orthonormalisation betas = S^(-1/2)), in `digits`-digit arithmetic, rounded once to float64:
    the same bits on any CPU. Same formulas as dscribe 2.1 (basis decays to 1e-3 at
    linspace(1, r_cut, n_max))."""
    import mpmath

    with mpmath.workdps(digits):
        a = [mpmath.mpf(float(x)) for x in np.linspace(1, r_cut, n_max)]  # the float grid dscribe uses
        threshold = mpmath.mpf("1e-3")
        alphas = np.zeros((l_max + 1, n_max))
        betas = np.zeros((l_max + 1, n_max, n_max))
        for l in range(l_max + 1):
            alpha = [-mpmath.log(threshold / ai**l) / ai**2 for ai in a]
            S = mpmath.matrix(n_max, n_max)
            for i in range(n_max):
                for j in range(n_max):
                    S[i, j] = mpmath.mpf("0.5") * mpmath.gamma(l + mpmath.mpf(3) / 2) * (alpha[i] + alpha[j]) ** (-l - mpmath.mpf(3) / 2)
            eigenvalues, vectors = mpmath.eigsy(S)
            if min(eigenvalues) <= 0:
                raise ValueError("the GTO overlap matrix is not positive definite: lower n_max or raise r_cut")
            root = vectors * mpmath.diag([1 / mpmath.sqrt(e) for e in eigenvalues]) * vectors.T
            alphas[l] = [float(x) for x in alpha]
            betas[l] = [[float(root[i, j]) for j in range(n_max)] for i in range(n_max)]
    return alphas, betas


def _species_numbers(species: Iterable[str | int]) -> list[int]:
    """Symbols or atomic numbers → sorted unique atomic numbers (dscribe's column order)."""
    from ase.data import atomic_numbers

    numbers = set()
    for s in species:
        if isinstance(s, (int, np.integer)):
            z = int(s)
        else:
            z = atomic_numbers.get(str(s).strip(), 0)
        if not 1 <= z <= 118:
            raise ValueError(f"unknown species {s!r}")
        numbers.add(z)
    return sorted(numbers)


class SoapFeaturizer:
    """Structure-averaged SOAP (dscribe 2.x), scikit-learn style.

    `fit(atoms_list)` fixes the species layout (sorted atomic numbers found in the data unless
    `species` is given); `transform(atoms_list)` returns an (n, d) array of `dtype`, computed in
    chunks of `chunk_size` structures so memory stays bounded.
    """

    def __init__(
        self,
        species: Sequence[str | int] | None = None,
        r_cut: float = 5.0,
        n_max: int = 8,
        l_max: int = 6,
        sigma: float = 0.5,
        compression: str = "mu1nu1",
        average: str = "inner",
        dtype: str = "float32",
        n_jobs: int = 1,
        chunk_size: int = 256,
    ):
        self.species = species
        self.r_cut = r_cut
        self.n_max = n_max
        self.l_max = l_max
        self.sigma = sigma
        self.compression = compression
        self.average = average
        self.dtype = dtype
        self.n_jobs = n_jobs
        self.chunk_size = chunk_size

    # -- estimator API ------------------------------------------------------------------
    def fit(self, atoms_list: Iterable[Any] = (), y: Any = None) -> SoapFeaturizer:
        if self.compression not in COMPRESSION_MODES:
            raise ValueError(f"compression must be one of {COMPRESSION_MODES}, got {self.compression!r}")
        if self.average not in AVERAGE_MODES:
            raise ValueError(f"average must be one of {AVERAGE_MODES}, got {self.average!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.species is not None:
            numbers = _species_numbers(self.species)
        else:
            found: set[int] = set()
            for atoms in atoms_list:
                found.update(int(z) for z in atoms.numbers)
            numbers = sorted(found)
        if not numbers:
            raise ValueError("no species: pass `species` or fit on at least one structure")
        from ase.data import chemical_symbols
        from dscribe.descriptors import SOAP

        self.species_numbers_ = numbers
        self.species_ = [chemical_symbols[z] for z in numbers]
        self._species_set = frozenset(numbers)
        self.soap_ = SOAP(
            species=numbers,
            r_cut=float(self.r_cut),
            n_max=int(self.n_max),
            l_max=int(self.l_max),
            sigma=float(self.sigma),
            periodic=True,  # dscribe still honours each Atoms' own pbc flags
            average=self.average,
            compression={"mode": self.compression},
            sparse=False,
            dtype=self.dtype,
        )
        # dscribe orthonormalises its GTO radial basis with sqrtm(inv(S)) on an ill-conditioned
        # overlap S: through LAPACK that amplifies the BLAS kernel's last-bit differences to ~1e-8
        # in the features. The same basis computed in 50-digit arithmetic is identical everywhere.
        self.soap_._alphas, self.soap_._betas = gto_basis(float(self.r_cut), int(self.n_max), int(self.l_max))
        self.n_features_out_ = int(self.soap_.get_number_of_features())
        return self

    def transform(self, atoms_list: Sequence[Any]) -> np.ndarray:
        if not hasattr(self, "soap_"):
            raise RuntimeError("SoapFeaturizer is not fitted: call fit() first")
        atoms_list = list(atoms_list)
        out = np.empty((len(atoms_list), self.n_features_out_), dtype=self.dtype)
        for i, atoms in enumerate(atoms_list):
            extra = set(int(z) for z in atoms.numbers) - self._species_set
            if extra:
                from ase.data import chemical_symbols

                name = atoms.info.get("frame_id", f"structure {i}")
                raise ValueError(
                    f"record {name!r}, field 'numbers': species {sorted(chemical_symbols[z] for z in extra)} "
                    f"are not in the fitted layout {self.species_}"
                )
        for start in range(0, len(atoms_list), self.chunk_size):
            chunk = atoms_list[start : start + self.chunk_size]
            values = self.soap_.create(chunk, n_jobs=self.n_jobs) if len(chunk) > 1 else self.soap_.create(chunk[0])
            out[start : start + len(chunk)] = np.asarray(values, dtype=self.dtype).reshape(len(chunk), -1)
        return out

    def fit_transform(self, atoms_list: Sequence[Any], y: Any = None) -> np.ndarray:
        atoms_list = list(atoms_list)
        return self.fit(atoms_list).transform(atoms_list)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        keys = ("species", "r_cut", "n_max", "l_max", "sigma", "compression", "average", "dtype", "n_jobs", "chunk_size")
        return {k: getattr(self, k) for k in keys}

    def layout(self) -> dict[str, Any]:
        """What the columns mean: enough to rebuild the same featurizer."""
        if not hasattr(self, "soap_"):
            raise RuntimeError("SoapFeaturizer is not fitted: call fit() first")
        return {**self.get_params(), "species": list(self.species_), "n_features": self.n_features_out_}
