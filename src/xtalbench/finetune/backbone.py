"""CHGNet as a frozen backbone: pooled crystal features and zero-shot formation energies.

One CHGNet pass (energy only, no gradients) per material's last frame gives its 64-number
pooled crystal feature vector (the input of CHGNet's own energy readout) and its energy, which
becomes a zero-shot formation energy in MP2020's convention (CHGNet energies already carry the
MP2020 corrections, see `xtalbench.evaluate.scoring.energies_mp2020_corrected`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from xtalbench.core.errors import XtalbenchError
from xtalbench.core.schema import to_structure

BACKBONE_SCHEMA = pa.schema([
    pa.field("frame_id", pa.string(), nullable=False),
    pa.field("material_id", pa.string(), nullable=False),
    pa.field("features", pa.list_(pa.float32())),
    pa.field("e_form_zero_shot", pa.float64()),
    pa.field("reason", pa.string()),  # why features/energy are missing (element, correction), else null
])


class BackboneError(XtalbenchError, RuntimeError):
    """The backbone cannot be used for fine-tuning (unknown kind, failed load)."""


def chgnet_backbone(rows: Sequence[dict[str, Any]], spec: Any, references: str, device: str = "cpu", batch_size: int = 8, progress: bool = True) -> pa.Table:
    """Features and zero-shot E_form (eV/atom) of frame rows; a row that fails keeps its reason."""
    from chgnet.model import CHGNet

    from xtalbench.evaluate.scoring import energies_mp2020_corrected
    from xtalbench.evaluate.thermo import MP2020FormationEnergy, ThermoError

    if spec.kind != "chgnet":
        raise BackboneError(f"finetune: backbone {spec.name!r} is of kind {spec.kind!r}; the readout-head method supports chgnet")
    model = CHGNet.load(model_name=spec.checkpoint or "0.3.0", use_device=device, verbose=False)
    model.eval()
    e_form = MP2020FormationEnergy(references=references, compatibility=not energies_mp2020_corrected(spec)).fit()
    out: dict[str, list] = {name: [] for name in BACKBONE_SCHEMA.names}
    for start in tqdm(range(0, len(rows), batch_size), desc="chgnet backbone", unit="batch", disable=not progress):
        chunk = rows[start : start + batch_size]
        structures = [to_structure(r) for r in chunk]
        preds = model.predict_structure(structures, task="e", return_crystal_feas=True, batch_size=batch_size)
        preds = [preds] if isinstance(preds, dict) else preds
        for row, structure, pred in zip(chunk, structures, preds, strict=True):
            out["frame_id"].append(row["frame_id"])
            out["material_id"].append(row["material_id"])
            out["features"].append(np.asarray(pred["crystal_fea"], dtype=np.float32).ravel().tolist())
            energy = float(pred["e"]) * len(structure)  # CHGNet predicts eV/atom
            try:
                out["e_form_zero_shot"].append(e_form.e_form_per_atom(energy, structure, record=row["frame_id"]))
                out["reason"].append(None)
            except ThermoError as error:
                out["e_form_zero_shot"].append(None)
                out["reason"].append(str(error))
    return pa.table(out, schema=BACKBONE_SCHEMA)
