"""Any ASE calculator by import path (`ase.calculators.emt.EMT`) + kwargs.

ASE calculators take one structure at a time, so this is a per-structure loop by necessity.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from xtalbench.models import ModelLoadError, as_rows, check_elements


def import_object(path: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as error:
        raise ModelLoadError(f"cannot import ASE calculator {path!r}: {error}") from error


class AsePredictor:
    dtype = "float64"

    def __init__(self, calculator: str, kwargs: Mapping[str, Any] | None = None, elements: Sequence[str] | None = None, name: str = "ase", progress: bool = True):
        from xtalbench.core.schema import atomic_number

        self.name, self.progress = name, progress
        self.calculator_path = calculator
        self.calculator = import_object(calculator)(**dict(kwargs or {}))
        self.supported_numbers: frozenset[int] | None = (
            None if elements is None else frozenset(atomic_number(e, name) for e in elements)
        )

    def default_batch_size(self) -> int:
        return 1  # one structure at a time

    def predict(self, frames: Sequence[Mapping[str, Any]] | pa.Table, batch_size: int | None = None) -> dict[str, Any]:
        from ase.calculators.calculator import PropertyNotImplementedError
        from tqdm import tqdm

        from xtalbench.core.schema import to_atoms

        rows = as_rows(frames)
        check_elements(rows, self.supported_numbers, self.name)
        energy, forces, stress = [], [], []
        for row in tqdm(rows, desc=f"{self.name} inference", unit="structure", disable=not self.progress, leave=False):
            atoms = to_atoms(row, with_labels=False)
            atoms.calc = self.calculator
            energy.append(float(atoms.get_potential_energy()))
            forces.append(np.asarray(atoms.get_forces(), dtype=np.float64))
            try:
                stress.append(np.asarray(atoms.get_stress(voigt=True), dtype=np.float64) if atoms.pbc.all() else None)
            except PropertyNotImplementedError:
                stress.append(None)
        has_stress = any(s is not None for s in stress)
        return {
            "energy": np.asarray(energy, dtype=np.float64),
            "forces": forces,
            "stress": np.stack([np.full(6, np.nan) if s is None else s for s in stress]) if has_stress else None,
        }
