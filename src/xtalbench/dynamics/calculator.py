"""An ASE `Calculator` in front of any project predictor (`predict(frames) -> energy, forces, stress`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes


def atoms_to_row(atoms: Atoms, frame_id: str = "frame") -> dict[str, Any]:
    """ase.Atoms → a frames-table row with the structure columns the predictors read."""
    return {
        "frame_id": frame_id,
        "numbers": [int(z) for z in atoms.numbers],
        "positions": np.asarray(atoms.positions, dtype=np.float64).reshape(-1).tolist(),
        "lattice": np.asarray(atoms.cell.array, dtype=np.float64).reshape(-1).tolist(),
        "pbc": [bool(p) for p in atoms.pbc],
    }


def predict_atoms(predictor: Any, structures: Sequence[Atoms], batch_size: int | None = None) -> dict[str, Any]:
    """One batched `predict` call over many structures (phonopy displacement sets)."""
    rows = [atoms_to_row(a, f"s{i}") for i, a in enumerate(structures)]
    return predictor.predict(rows, batch_size=batch_size)


class PredictorCalculator(Calculator):
    """ASE calculator that asks a predictor for energy, forces and stress of one structure at a time.

    Stress is ASE's Voigt order and sign (eV/Å³); a predictor without stress leaves it out.
    """

    implemented_properties = ["energy", "forces", "stress"]  # noqa: RUF012 - ASE's Calculator convention

    def __init__(self, predictor: Any, batch_size: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.predictor = predictor
        self.batch_size = batch_size
        self.calls = 0

    def calculate(self, atoms: Atoms | None = None, properties: list[str] | None = None, system_changes: list[str] = all_changes) -> None:
        super().calculate(atoms, properties or ["energy"], system_changes)
        out = predict_atoms(self.predictor, [self.atoms], self.batch_size)
        self.calls += 1
        self.results = {
            "energy": float(np.asarray(out["energy"])[0]),
            "free_energy": float(np.asarray(out["energy"])[0]),
            "forces": np.asarray(out["forces"][0], dtype=np.float64).reshape(-1, 3),
        }
        stress = out.get("stress")
        if stress is not None and len(stress):
            self.results["stress"] = np.asarray(stress[0], dtype=np.float64).reshape(6)
