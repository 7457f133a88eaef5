"""CHGNet (weights ship in the chgnet wheel, so it loads offline).

CHGNet batches through `predict_structure(batch_size=...)`, but on CPU batched graphs eat memory
(batch 16 of ~30-atom cells peaked at 15 GB) for no speed-up, so the CPU default is 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from xtalbench.models import ModelLoadError, as_rows, check_elements, voigt

MAX_Z = 94  # CHGNet's element embedding covers H..Pu


class ChgnetPredictor:
    dtype = "float32"  # CHGNet runs in its own float32 graph code

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", name: str = "chgnet", progress: bool = True, dtype: str | None = None):
        from ase import units
        from chgnet.model import CHGNet

        self.name, self.device, self.progress = name, device, progress
        try:
            if checkpoint and checkpoint.endswith((".pth.tar", ".pt", ".pth")):
                self.model = CHGNet.from_file(checkpoint)
            else:
                self.model = CHGNet.load(model_name=checkpoint or "0.3.0", use_device=device, verbose=False)
        except Exception as error:
            raise ModelLoadError(f"cannot load CHGNet model {name!r} ({checkpoint or 'bundled 0.3.0'}): {error}") from error
        self.model = self.model.to(device)
        self._gpa = units.GPa
        self.supported_numbers: frozenset[int] | None = frozenset(range(1, MAX_Z + 1))

    def default_batch_size(self) -> int:
        return 1 if self.device == "cpu" else 16

    def predict(self, frames: Sequence[Mapping[str, Any]] | pa.Table, batch_size: int | None = None) -> dict[str, Any]:
        from tqdm import tqdm

        from xtalbench.core.schema import to_structure

        rows = as_rows(frames)
        check_elements(rows, self.supported_numbers, self.name)
        batch_size = int(batch_size or self.default_batch_size())
        energy, forces, stress = [], [], []
        for start in tqdm(range(0, len(rows), batch_size), desc=f"{self.name} inference", unit="batch", disable=not self.progress, leave=False):
            chunk = [to_structure(r) for r in rows[start : start + batch_size]]
            preds = self.model.predict_structure(chunk, task="efs", batch_size=batch_size)
            preds = [preds] if isinstance(preds, dict) else preds
            for structure, pred in zip(chunk, preds):
                n = len(structure)
                energy.append(float(pred["e"]) * (n if self.model.is_intensive else 1))
                forces.append(np.asarray(pred["f"], dtype=np.float64).reshape(n, 3))
                stress.append(np.asarray(pred["s"], dtype=np.float64).reshape(3, 3) * self._gpa)  # GPa → eV/Å³, ASE sign
        return {
            "energy": np.asarray(energy, dtype=np.float64),
            "forces": forces,
            "stress": voigt(np.asarray(stress)) if stress else np.zeros((0, 6)),
        }
