"""The harmonic approximation as a model: F = −Φ·u, E = E₀ + ½ u·Φ·u (a baseline with σ⁽²⁾ = 0 by construction).

It follows the predictor contract (`predict(frames, batch_size)`), so it runs through the same
phonon, MD and σ⁽²⁾ code as any MLIP; tests use it as a model whose answers are known exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xtalbench.core.errors import XtalbenchError
from xtalbench.dynamics.anharmonicity import displacements


class HarmonicPredictor:
    """Harmonic forces of full supercell force constants Φ (N, N, 3, 3) around `reference` (ase.Atoms)."""

    dtype = "float64"

    def __init__(self, reference: Any, force_constants: np.ndarray, energy0: float = 0.0, name: str = "harmonic"):
        n = len(reference)
        fc = np.asarray(force_constants, dtype=np.float64)
        if fc.shape != (n, n, 3, 3):
            raise XtalbenchError(f"harmonic model {name!r}: force constants have shape {fc.shape}, expected {(n, n, 3, 3)}")
        self.name, self.fc, self.energy0 = name, fc, float(energy0)
        self.numbers = np.asarray(reference.numbers)
        self.positions = np.asarray(reference.positions, dtype=np.float64)
        self.cell = np.asarray(reference.cell.array, dtype=np.float64)
        self.supported_numbers: frozenset[int] | None = frozenset(int(z) for z in self.numbers)

    def default_batch_size(self) -> int:
        return 1

    def predict(self, frames: Sequence[Mapping[str, Any]], batch_size: int | None = None) -> dict[str, Any]:
        energy, forces = [], []
        for row in frames:
            pos = np.asarray(row["positions"], dtype=np.float64).reshape(-1, 3)
            if len(pos) != len(self.positions) or not np.array_equal(np.asarray(row["numbers"]), self.numbers):
                raise XtalbenchError(f"harmonic model {self.name!r}: frame {row.get('frame_id')!r} is not its reference supercell")
            u = displacements(pos[None], self.positions, self.cell)[0]
            f = -np.einsum("ijab,jb->ia", self.fc, u)
            forces.append(f)
            energy.append(self.energy0 - 0.5 * float((u * f).sum()))
        return {"energy": np.asarray(energy), "forces": forces, "stress": None}
