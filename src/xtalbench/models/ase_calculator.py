"""Any ASE calculator by import path (`ase.calculators.emt.EMT`) + kwargs.

ASE calculators take one structure at a time, so this is a per-structure loop by necessity.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from xtalbench.models.base import AseCalculatorPredictor, ModelLoadError


def import_object(path: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as error:
        raise ModelLoadError(f"cannot import ASE calculator {path!r}: {error}") from error


class AsePredictor(AseCalculatorPredictor):
    def __init__(self, calculator: str, kwargs: Mapping[str, Any] | None = None, elements: Sequence[str] | None = None,
                 name: str = "ase", progress: bool = True, device: str = "cpu", dtype: str | None = None):  # fmt: skip
        from xtalbench.core.schema import atomic_number

        supported = None if elements is None else frozenset(atomic_number(e, name) for e in elements)
        super().__init__(name, device=device, dtype="float64", progress=progress, supported_numbers=supported)
        self.calculator = import_object(calculator)(**dict(kwargs or {}))
