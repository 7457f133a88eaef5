"""Fine-tune CHGNet on frames (energies, forces, stresses) with CHGNet's own trainer.

Labels are converted to CHGNet's training convention first: MP2020-corrected energies per atom
(CHGNet was trained on MPtrj `corrected_total_energy`; the frames hold raw DFT totals) and
VASP-sign stresses in kBar (what `chgnet.data.dataset.StructureData` expects). Only the modules
named in `trainable` learn (default: the energy readout `mlp`); the rest stays as pretrained.
The trainer keeps the epoch with the lowest validation energy MAE (CHGNet's `bestE` checkpoint).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from xtalbench.core.schema import to_structure


def chgnet_labels(rows: Sequence[dict[str, Any]], mp2020_corrected: bool, references: str) -> tuple[list, np.ndarray, list, list]:
    """Structures, energies per atom (model convention), forces (eV/Å), stresses (VASP kBar)."""
    from ase import units

    from xtalbench.evaluate.thermo import MP2020FormationEnergy

    corrector = MP2020FormationEnergy(references=references, compatibility=mp2020_corrected)
    structures, energies, forces, stresses = [], [], [], []
    for row in rows:
        s = to_structure(row)
        n = len(s)
        correction = corrector.correction(s, record=row["frame_id"]) if mp2020_corrected else 0.0
        structures.append(s)
        energies.append((float(row["energy"]) + correction) / n)
        forces.append(np.asarray(row["forces"], dtype=np.float64).reshape(n, 3).tolist())
        voigt = np.asarray(row["stress"], dtype=np.float64)  # ASE sign, eV/Å³, xx yy zz yz xz xy
        full = np.array([[voigt[0], voigt[5], voigt[4]], [voigt[5], voigt[1], voigt[3]], [voigt[4], voigt[3], voigt[2]]])
        stresses.append((-10.0 * full / units.GPa).tolist())  # ASE eV/Å³ → GPa → VASP kBar (compressive +)
    return structures, np.asarray(energies), forces, stresses


def predict_efs(model: Any, structures: list, batch_size: int = 1) -> dict[str, Any]:
    """Energy per atom (eV/atom), forces (eV/Å) and stress (GPa, ASE sign) of each structure."""
    out = {"e": [], "f": [], "s": []}
    for start in range(0, len(structures), batch_size):
        preds = model.predict_structure(structures[start : start + batch_size], task="efs", batch_size=batch_size)
        preds = [preds] if isinstance(preds, dict) else preds
        for pred in preds:
            out["e"].append(float(pred["e"]))
            out["f"].append(np.asarray(pred["f"], dtype=np.float64))
            out["s"].append(np.asarray(pred["s"], dtype=np.float64).reshape(3, 3))
    return out


def finetune_member(
    train: tuple, val: tuple, seed: int, epochs: int, lr: float, trainable: Sequence[str], batch_size: int, device: str, checkpoint: str | None = None
) -> Any:
    """One fine-tuned CHGNet (the best epoch on `val`). `train`/`val`: chgnet_labels outputs."""
    import torch
    from chgnet.data.dataset import StructureData, collate_graphs
    from chgnet.model import CHGNet
    from chgnet.trainer import Trainer
    from torch.utils.data import DataLoader

    torch.manual_seed(seed)
    model = CHGNet.load(model_name=checkpoint or "0.3.0", use_device=device, verbose=False)
    for name, param in model.named_parameters():
        param.requires_grad = any(t == "*" or name == t or name.startswith(t + ".") for t in trainable)

    def loader(data: tuple, shuffle: bool) -> DataLoader:
        structures, energies, forces, stresses = data
        dataset = StructureData(structures=structures, energies=list(energies), forces=forces, stresses=stresses, shuffle=False)
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate_graphs, generator=generator)

    trainer = Trainer(model=model, targets="efs", optimizer="Adam", scheduler="CosLR", criterion="MSE", epochs=epochs,
                      learning_rate=lr, use_device=device, torch_seed=seed, data_seed=seed, print_freq=10**9)
    with tempfile.TemporaryDirectory(prefix="xtalbench-chgnet-") as save_dir:
        trainer.train(loader(train, True), loader(val, False), save_dir=save_dir)
    best = trainer.get_best_model()
    best.eval()
    return best
