"""One batched, ASE-calculator-like interface in front of many MLIPs.

`load_model(load_spec(name)).predict(frames, batch_size)` takes frames-table rows (dicts or a
pyarrow Table) and returns `{"energy": (n,), "forces": [(n_i, 3)], "stress": (n, 6) or None}` in
eV, eV/Å and eV/Å³ (Voigt xx yy zz yz xz xy, ASE sign). Every backend subclasses
`xtalbench.models.base.Predictor`; a model whose YAML declares `environment:` runs in a worker
process inside its own pinned environment (`xtalbench.models.env`, `xtalbench.models.worker`),
behind the same interface.
"""

from __future__ import annotations

from xtalbench.models.base import (
    STRUCTURE_COLUMNS,
    ModelLoadError,
    PredictionError,
    Predictor,
    UnsupportedElementError,
    as_rows,
    check_elements,
    unsupported_elements,
    voigt,
)
from xtalbench.models.registry import (
    ModelSpec,
    ModelSpecError,
    TrainingSet,
    load_all,
    load_model,
    load_spec,
)

__all__ = [
    "STRUCTURE_COLUMNS",
    "ModelLoadError",
    "ModelSpec",
    "ModelSpecError",
    "PredictionError",
    "Predictor",
    "TrainingSet",
    "UnsupportedElementError",
    "as_rows",
    "check_elements",
    "load_all",
    "load_model",
    "load_spec",
    "unsupported_elements",
    "voigt",
]
