"""One batched, ASE-calculator-like interface in front of many MLIPs.

`predictor.predict(frames, batch_size)` takes frames-table rows (dicts or a pyarrow Table) and
returns `{"energy": (n,), "forces": [ (n_i, 3) ], "stress": (n, 6) or None}` in eV, eV/Å and
eV/Å³ (Voigt xx yy zz yz xz xy, ASE sign). An output the model does not have is None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from xtalbench.core.errors import XtalbenchError
from xtalbench.models.registry import (
    ModelSpec,
    ModelSpecError,
    TrainingSet,
    load_all,
    load_model,
    load_spec,
)

STRUCTURE_COLUMNS = ("frame_id", "numbers", "positions", "lattice", "pbc")

__all__ = [
    "ModelLoadError",
    "ModelSpec",
    "ModelSpecError",
    "Predictor",
    "TrainingSet",
    "UnsupportedElementError",
    "as_rows",
    "load_all",
    "load_model",
    "load_spec",
    "unsupported_elements",
]


class ModelLoadError(XtalbenchError, RuntimeError):
    """A model that cannot be loaded (missing file, failed download); says what to do."""


class UnsupportedElementError(ValueError):
    """A frame holds an element the model was not trained on; names the frame and the element."""

    def __init__(self, frame_id: str, element: str, model: str):
        self.frame_id, self.element, self.model = frame_id, element, model
        super().__init__(f"frame {frame_id!r}: element {element} is not supported by model {model!r}")


class Predictor(Protocol):
    name: str
    dtype: str
    supported_numbers: frozenset[int] | None  # None: any element

    def predict(self, frames: Sequence[Mapping[str, Any]] | pa.Table, batch_size: int | None = None) -> dict[str, Any]: ...


def as_rows(frames: Sequence[Mapping[str, Any]] | pa.Table) -> list[Mapping[str, Any]]:
    """Frames as row dicts; from a table, only the structure columns are converted."""
    if isinstance(frames, (pa.Table, pa.RecordBatch)):
        return frames.select(list(STRUCTURE_COLUMNS)).to_pylist()
    return list(frames)


def unsupported_elements(frame: Mapping[str, Any], supported: frozenset[int] | None) -> list[str]:
    """Symbols in the frame that the model does not cover (sorted, unique)."""
    if supported is None:
        return []
    from xtalbench.core.schema import element_symbol

    return [element_symbol(z) for z in sorted({int(z) for z in frame["numbers"]} - supported)]


def check_elements(rows: Sequence[Mapping[str, Any]], supported: frozenset[int] | None, model: str) -> None:
    for row in rows:
        missing = unsupported_elements(row, supported)
        if missing:
            raise UnsupportedElementError(str(row.get("frame_id")), missing[0], model)


def voigt(stress_3x3: np.ndarray) -> np.ndarray:
    """(n, 3, 3) → (n, 6) Voigt xx yy zz yz xz xy."""
    s = np.asarray(stress_3x3, dtype=np.float64).reshape(-1, 3, 3)
    return np.stack([s[:, 0, 0], s[:, 1, 1], s[:, 2, 2], s[:, 1, 2], s[:, 0, 2], s[:, 0, 1]], axis=1)
