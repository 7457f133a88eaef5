"""CHGNet (weights ship in the chgnet wheel, so it loads offline).

CHGNet batches through `predict_structure(batch_size=...)`, but on CPU batched graphs eat memory
(batch 16 of ~30-atom cells peaked at 15 GB), so the CPU default is a small batch (see
`default_batch_size`); on CUDA 16.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xtalbench.models.base import ModelLoadError, Predictor, Rows, voigt

MAX_Z = 94  # CHGNet's element embedding covers H..Pu
CPU_BATCH = 1


class ChgnetPredictor(Predictor):
    batched = True
    fixed_dtype = "float32"  # CHGNet runs in its own float32 graph code

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", name: str = "chgnet", progress: bool = True, dtype: str | None = None):
        from ase import units
        from chgnet.model import CHGNet

        super().__init__(name, device=device, dtype=dtype, progress=progress, supported_numbers=frozenset(range(1, MAX_Z + 1)))
        try:
            if checkpoint and checkpoint.endswith((".pth.tar", ".pt", ".pth")):
                self.model = CHGNet.from_file(checkpoint)
            else:
                self.model = CHGNet.load(model_name=checkpoint or "0.3.0", use_device=self.device, verbose=False)
        except Exception as error:
            raise ModelLoadError(f"cannot load CHGNet model {name!r} ({checkpoint or 'bundled 0.3.0'}): {error}") from error
        self.model = self.model.to(self.device)
        self._gpa = units.GPa

    def default_batch_size(self) -> int:
        return CPU_BATCH if self.device == "cpu" else 16

    def _predict_batch(self, rows: Rows) -> dict[str, Any]:
        from xtalbench.core.schema import to_structure

        chunk = [to_structure(r) for r in rows]
        preds = self.model.predict_structure(chunk, task="efs", batch_size=len(chunk))
        preds = [preds] if isinstance(preds, dict) else preds
        energy, forces, stress = [], [], []
        for structure, pred in zip(chunk, preds):
            n = len(structure)
            energy.append(float(pred["e"]) * (n if self.model.is_intensive else 1))
            forces.append(np.asarray(pred["f"], dtype=np.float64).reshape(n, 3))
            stress.append(np.asarray(pred["s"], dtype=np.float64).reshape(3, 3) * self._gpa)  # GPa → eV/Å³, ASE sign
        return {"energy": np.asarray(energy), "forces": forces, "stress": voigt(np.asarray(stress))}
