"""Split strategies. Each decides a role per material (the group key) for each of its folds.

`build_splits` runs the strategies listed in params `split.strategies` on one `SplitData`
and returns their results plus the kernel-PCA coordinates shared by LOCO, the split card and
the map plot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xtalbench.core.errors import XtalbenchError
from xtalbench.split.common import (
    SPLIT_SCHEMA,
    StrategyResult,
    check_group_aware,
    to_table,
)
from xtalbench.split.data import SplitData, load_split_data
from xtalbench.split.embedding import KernelMap
from xtalbench.split.forward import forward_split
from xtalbench.split.labels import element_split, spacegroup_split
from xtalbench.split.loco import loco_split, material_means
from xtalbench.split.random_split import random_split

STRATEGIES = ("loco", "random", "element", "spacegroup", "forward")
EMBEDDING_KEYS = ("n_components", "gamma", "exact_max_rows", "n_landmarks")

__all__ = [
    "SPLIT_SCHEMA", "STRATEGIES", "SplitData", "SplitRun", "StrategyResult", "build_splits",
    "check_group_aware", "embed", "load_split_data", "to_table",
]


@dataclass
class SplitRun:
    results: dict[str, StrategyResult]
    frame_coords: np.ndarray  # kernel-PCA coordinates of every frame
    material_coords: np.ndarray  # mean per material
    embedding: dict[str, Any]


def embed(data: SplitData, loco: dict[str, Any], seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Kernel-PCA coordinates of every frame, fitted on one representative frame per material."""
    kmap = KernelMap(random_state=seed, **{k: loco[k] for k in EMBEDDING_KEYS if k in loco})
    kmap.fit_stream(data.chunks, data.representatives())
    coords = kmap.transform_stream(data.chunks, data.n_frames, reuse_fit=True)
    return coords, {**kmap.describe(), "fitted_on": "last frame of each material", "features": data.feature_column}


def build_splits(data: SplitData, params: dict[str, Any]) -> SplitRun:
    seed = int(params.get("seed", 0))
    strategies = list(params.get("strategies") or STRATEGIES)
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise XtalbenchError(f"params split.strategies: unknown {unknown} (known: {', '.join(STRATEGIES)})")
    loco_params = dict(params.get("loco") or {})
    frame_coords, embedding = embed(data, loco_params, seed)
    results: dict[str, StrategyResult] = {}
    for name in strategies:
        block = dict(params.get(name) or {})
        if name == "loco":
            results[name] = loco_split(data, frame_coords, block, seed)
        elif name == "random":
            results[name] = random_split(data, block, seed)
        elif name == "element":
            results[name] = element_split(data, block, seed)
        elif name == "spacegroup":
            results[name] = spacegroup_split(data, block, seed)
        elif name == "forward":
            results[name] = forward_split(data, block, seed)
    return SplitRun(results, frame_coords, material_means(data, frame_coords), embedding)
