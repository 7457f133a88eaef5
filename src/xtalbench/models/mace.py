"""MACE models (file, pipeline-trained, mace-torch foundation) with batched inference.

Structures become mace `AtomicData` graphs (the model's own r_max and z_table) and run through
mace's torch_geometric DataLoader in batches, the way `mace/cli/eval_configs.py` does: one
forward pass per batch, not one per structure.
"""

from __future__ import annotations

import os

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # mace checkpoints are pickled modules

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mace  # noqa: F401  # must precede e3nn.o3 (torch>=2.6 weights-only loading trap)
import numpy as np
import torch

from xtalbench.models.base import ModelLoadError, Predictor, Rows, voigt
from xtalbench.models.registry import FOUNDATION_ALIASES, ModelSpec

DEFAULT_BATCH_SIZE = 32
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _load_module(path: Path, device: str) -> torch.nn.Module:
    if not path.exists():
        raise ModelLoadError(f"MACE model file {path} does not exist (train it with `dvc repro` or fix `checkpoint:`)")
    try:
        return torch.load(f=str(path), map_location=device, weights_only=False)
    except Exception as error:  # corrupt or not a MACE file
        raise ModelLoadError(f"cannot load MACE model file {path}: {type(error).__name__}: {error}") from error


class _GraphDataset(torch.utils.data.Dataset):
    """Frames → AtomicData graphs, built lazily one batch at a time (bounded memory)."""

    def __init__(self, rows: Sequence[Mapping[str, Any]], z_table, r_max: float, heads: list[str], head: str):
        self.rows, self.z_table, self.r_max, self.heads, self.head = rows, z_table, r_max, heads, head

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        from mace import data as mace_data

        row = self.rows[index]
        n = len(row["numbers"])
        config = mace_data.Configuration(
            atomic_numbers=np.asarray(row["numbers"], dtype=np.int64),
            positions=np.asarray(row["positions"], dtype=np.float64).reshape(n, 3),
            properties={},
            property_weights={},
            cell=np.asarray(row["lattice"], dtype=np.float64).reshape(3, 3),
            pbc=tuple(bool(p) for p in row["pbc"]),
            head=self.head,
        )
        return mace_data.AtomicData.from_config(config, z_table=self.z_table, cutoff=self.r_max, heads=self.heads)


class MacePredictor(Predictor):
    """Batched energy/forces/stress from a MACE torch module (one forward pass per batch)."""

    batched = True
    default_batch = DEFAULT_BATCH_SIZE

    def __init__(self, model: torch.nn.Module, device: str = "cpu", dtype: str = "float64", name: str = "mace", progress: bool = True):
        from mace.tools import utils

        super().__init__(name, device=device, dtype=dtype, progress=progress)
        self.model = (model.double() if self.dtype == "float64" else model.float()).to(self.device).eval()
        for param in self.model.parameters():
            param.requires_grad = False
        self.r_max = float(self.model.r_max)
        self.z_table = utils.AtomicNumberTable([int(z) for z in self.model.atomic_numbers])
        self.supported_numbers = frozenset(self.z_table.zs)
        heads = list(getattr(self.model, "heads", None) or ["Default"])
        self.heads = heads
        defaults = [h for h in heads if h.lower() == "default"]
        self.head = heads[0] if len(heads) == 1 else (defaults[0] if defaults else heads[-1])

    @classmethod
    def from_file(cls, path: str | Path, device: str = "cpu", dtype: str = "float64", name: str | None = None, **options: Any) -> MacePredictor:
        path = Path(path)
        return cls(_load_module(path, device), device=device, dtype=dtype, name=name or path.stem, **options)

    @classmethod
    def from_foundation(cls, spec: ModelSpec, device: str = "cpu", dtype: str = "float32", **options: Any) -> MacePredictor:
        """Through mace-torch's own downloader and cache; offline, a clear error says what to do."""
        from mace.calculators import foundations_models as fm
        from mace.tools.utils import get_cache_dir

        name = FOUNDATION_ALIASES.get(str(spec.foundation), str(spec.foundation))
        urls = fm.mace_mp_urls if spec.family == "mace_mp" else fm.mace_off_urls
        if name not in urls:
            raise ModelLoadError(
                f"model {spec.name!r}: unknown {spec.family} foundation model {spec.foundation!r} (known: {', '.join(urls)})"
            )
        loader = fm.mace_mp if spec.family == "mace_mp" else fm.mace_off
        try:
            module = loader(model=name, device=device, default_dtype=dtype, return_raw_model=True)
        except Exception as error:
            cause = error.__cause__ or error
            raise ModelLoadError(
                f"cannot load MACE foundation model {spec.name!r} ({spec.family} {name!r}): "
                f"{type(cause).__name__}: {cause}. mace-torch downloads it from {urls[name]} into {get_cache_dir()}; "
                f"on a machine without internet, copy that file there, or set `checkpoint:` in {spec.source or 'its YAML'} "
                f"to a local copy of the .model file."
            ) from error
        return cls(module, device=device, dtype=dtype, name=spec.name, **options)

    def _predict_batch(self, rows: Rows) -> dict[str, Any]:
        from mace.tools import torch_geometric, torch_tools

        with torch_tools.default_dtype(self.dtype):
            loader = torch_geometric.dataloader.DataLoader(
                dataset=_GraphDataset(rows, self.z_table, self.r_max, self.heads, self.head),
                batch_size=len(rows),
                shuffle=False,
                drop_last=False,
            )
            (batch,) = list(loader)
            batch = batch.to(self.device)
            out = self.model(batch.to_dict(), compute_stress=True, training=False)
        ptr = batch.ptr.cpu().numpy()
        f = out["forces"].detach().cpu().numpy().astype(np.float64)
        stress = out.get("stress")
        return {
            "energy": out["energy"].detach().cpu().numpy().astype(np.float64),
            "forces": [f[ptr[i] : ptr[i + 1]] for i in range(len(ptr) - 1)],
            "stress": None if stress is None else voigt(stress.detach().cpu().numpy()),
        }
