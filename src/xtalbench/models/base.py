"""The Predictor base class: batching, element checks, declared properties, dtype and device once.

Like ASE's `Calculator` for its backends, `Predictor.predict` does the shared work: frames (row
dicts or a pyarrow Table) → rows, the element check against `supported_numbers`, the batch loop
with a progress bar, the shape checks of what the backend returned, and the assembly of
`{"energy": (n,), "forces": [(n_i, 3)], "stress": (n, 6) or None}` in eV, eV/Å and eV/Å³ (Voigt
xx yy zz yz xz xy, ASE sign). A backend implements only `_predict_batch(rows)` for one batch and
declares `implemented_properties`; a property it does not implement comes back as None, and a
non-periodic frame has NaN stress.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from xtalbench.core.errors import XtalbenchError

STRUCTURE_COLUMNS = ("frame_id", "numbers", "positions", "lattice", "pbc")
PROPERTIES = ("energy", "forces", "stress")
DTYPES = ("float32", "float64")
Rows = Sequence[Mapping[str, Any]]


class ModelLoadError(XtalbenchError, RuntimeError):
    """A model that cannot be loaded (missing file, failed download); says what to do."""


class PredictionError(XtalbenchError, RuntimeError):
    """A backend that returned something malformed (wrong count or shape); names the model and frame."""


class UnsupportedElementError(XtalbenchError, ValueError):
    """A frame holds an element the model was not trained on; names the frame and the element."""

    def __init__(self, frame_id: str, element: str, model: str):
        self.frame_id, self.element, self.model = frame_id, element, model
        super().__init__(f"frame {frame_id!r}: element {element} is not supported by model {model!r}")


def as_rows(frames: Rows | pa.Table | pa.RecordBatch) -> list[Mapping[str, Any]]:
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


def check_elements(rows: Rows, supported: frozenset[int] | None, model: str) -> None:
    for row in rows:
        missing = unsupported_elements(row, supported)
        if missing:
            raise UnsupportedElementError(str(row.get("frame_id")), missing[0], model)


def voigt(stress_3x3: np.ndarray) -> np.ndarray:
    """(n, 3, 3) → (n, 6) Voigt xx yy zz yz xz xy."""
    s = np.asarray(stress_3x3, dtype=np.float64).reshape(-1, 3, 3)
    return np.stack([s[:, 0, 0], s[:, 1, 1], s[:, 2, 2], s[:, 1, 2], s[:, 0, 2], s[:, 0, 1]], axis=1)


def resolve_dtype(dtype: str | None, default: str = "float64") -> str:
    dtype = dtype or default
    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype {dtype!r}: expected float32 or float64")
    return dtype


class Predictor(ABC):
    """Base of every model backend; subclasses implement `_predict_batch` (see the module docstring).

    Class attributes a backend may override: `implemented_properties` (subset of PROPERTIES),
    `batched` (whether one call on many structures is faster than a loop: False means a
    per-structure backend, default batch size 1), `fixed_dtype` (a backend that always computes
    in one dtype, e.g. CHGNet float32).
    """

    implemented_properties: tuple[str, ...] = PROPERTIES
    batched: bool = False
    fixed_dtype: str | None = None
    default_batch: int = 32  # for batched backends on CPU

    def __init__(self, name: str, device: str = "cpu", dtype: str | None = "float64", progress: bool = True,
                 supported_numbers: frozenset[int] | None = None):  # fmt: skip
        from xtalbench.core.device import resolve_device

        try:
            self.device = resolve_device(device)
        except SystemExit as error:  # resolve_device speaks CLI; the library raises
            raise ModelLoadError(f"model {name!r}: {error}") from None
        self.name = name
        self.dtype = self.fixed_dtype or resolve_dtype(dtype)
        self.progress = progress
        self.supported_numbers = supported_numbers

    def default_batch_size(self) -> int:
        """Structures per `_predict_batch` call when the caller gives none."""
        if not self.batched:
            return 1
        return self.default_batch

    @abstractmethod
    def _predict_batch(self, rows: Rows) -> dict[str, Any]:
        """One batch → {"energy": (b,), "forces": [(n_i, 3)] | None, "stress": (b, 6) | None}."""

    def predict(self, frames: Rows | pa.Table, batch_size: int | None = None) -> dict[str, Any]:
        """Energies, forces and stresses of every frame, in order (see the module docstring)."""
        from tqdm import tqdm

        rows = as_rows(frames)
        check_elements(rows, self.supported_numbers, self.name)
        batch_size = max(1, int(batch_size or self.default_batch_size()))
        energy: list[np.ndarray] = []
        forces: list[np.ndarray] = []
        stress: list[np.ndarray] = []
        want_forces = "forces" in self.implemented_properties
        want_stress = "stress" in self.implemented_properties
        starts = range(0, len(rows), batch_size)
        unit = "batch" if batch_size > 1 else "structure"
        for start in tqdm(starts, desc=f"{self.name} inference", unit=unit, disable=not self.progress or len(starts) < 2, leave=False):
            chunk = rows[start : start + batch_size]
            out = self._predict_batch(chunk)
            e, f, s = self._checked(chunk, out, want_forces, want_stress)
            energy.append(e)
            forces.extend(f)
            stress.append(s)
        n = len(rows)
        result_stress = None
        if want_stress:
            result_stress = np.concatenate(stress) if stress else np.zeros((0, 6))
            periodic = np.array([all(bool(p) for p in r["pbc"]) for r in rows], dtype=bool)
            if n:
                result_stress[~periodic] = np.nan  # no cell, no stress
        return {
            "energy": np.concatenate(energy) if energy else np.zeros(0),
            "forces": forces if want_forces else None,
            "stress": result_stress,
        }

    def _checked(self, chunk: Rows, out: Mapping[str, Any], want_forces: bool, want_stress: bool):
        b = len(chunk)
        first = str(chunk[0].get("frame_id")) if b else "?"
        e = np.asarray(out.get("energy"), dtype=np.float64).reshape(-1)
        if e.shape != (b,):
            raise PredictionError(f"model {self.name!r}: {e.size} energies for a batch of {b} frames starting at {first!r}")
        f: list[np.ndarray] = []
        if want_forces:
            raw = out.get("forces")
            if raw is None or len(raw) != b:
                raise PredictionError(f"model {self.name!r}: forces missing or of the wrong count for the batch starting at {first!r}")
            for row, fi in zip(chunk, raw):
                n_atoms = len(row["numbers"])
                arr = np.asarray(fi, dtype=np.float64)
                if arr.size != 3 * n_atoms:
                    raise PredictionError(f"model {self.name!r}: frame {row.get('frame_id')!r}: {arr.size} force values for {n_atoms} atoms")
                f.append(arr.reshape(n_atoms, 3))
        s = np.zeros((b, 6))
        if want_stress:
            raw_s = out.get("stress")
            if raw_s is not None and np.size(raw_s) != 6 * b:
                raise PredictionError(f"model {self.name!r}: {np.size(raw_s)} stress values for the batch of {b} frames starting at {first!r} (expected {6 * b}, Voigt)")
            s = np.full((b, 6), np.nan) if raw_s is None else np.asarray(raw_s, dtype=np.float64).reshape(b, 6)
        return e, f, s

    def close(self) -> None:
        """Release resources (worker processes); a no-op in-process."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device!r}, dtype={self.dtype!r})"


class AseCalculatorPredictor(Predictor):
    """A backend that wraps one ASE calculator: a per-structure loop by necessity."""

    batched = False
    calculator: Any

    def _predict_batch(self, rows: Rows) -> dict[str, Any]:
        from ase.calculators.calculator import PropertyNotImplementedError

        from xtalbench.core.schema import to_atoms

        energy, forces, stress = [], [], []
        for row in rows:
            atoms = to_atoms(row, with_labels=False)
            atoms.calc = self.calculator
            energy.append(float(atoms.get_potential_energy()))
            forces.append(np.asarray(atoms.get_forces(), dtype=np.float64) if "forces" in self.implemented_properties else None)
            value = np.full(6, np.nan)
            if "stress" in self.implemented_properties and atoms.pbc.all():
                try:
                    value = np.asarray(atoms.get_stress(voigt=True), dtype=np.float64)
                except PropertyNotImplementedError:
                    pass
            stress.append(value)
        return {"energy": np.asarray(energy), "forces": forces, "stress": np.stack(stress) if stress else np.zeros((0, 6))}
