"""K-fold forward cross-validation (Xiong et al. 2020) on a material property.

Materials are sorted by the property (ties by material id) and cut into k bins of equal
count. Fold i (i = 1..k-1) trains on bins 0..i-1 and tests on every material above them
(bins i..k-1), so every frame has a role in every fold and the test values were never seen
in training. Materials without a value stay in train and are counted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xtalbench.split.common import StrategyResult, hold_out
from xtalbench.split.data import SplitData

DERIVED = {"energy_per_atom": ("energy", "nsites")}


def property_values(data: SplitData, name: str) -> np.ndarray | None:
    """Per-material mean of a frame property (or a derived one such as energy_per_atom)."""
    meta = data.meta
    if name in DERIVED:
        num, den = DERIVED[name]
        if num not in meta or den not in meta:
            return None
        frame_values = meta[num].to_numpy(dtype=float) / meta[den].to_numpy(dtype=float)
    elif name in meta:
        frame_values = meta[name].to_numpy(dtype=float)
    else:
        return None
    ok = np.isfinite(frame_values)
    sums = np.bincount(data.material_of_frame[ok], weights=frame_values[ok], minlength=data.n_materials)
    counts = np.bincount(data.material_of_frame[ok], minlength=data.n_materials)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def forward_split(data: SplitData, params: dict[str, Any], seed: int) -> StrategyResult:
    rng = np.random.default_rng(seed)
    k = int(params.get("k", 5))
    min_coverage = float(params.get("min_coverage", 0.5))
    tried = {}
    for name in params.get("properties") or []:
        values = property_values(data, name)
        coverage = 0.0 if values is None else float(np.isfinite(values).mean())
        tried[name] = round(coverage, 4)
        if coverage >= min_coverage:
            break
    else:
        reason = f"no property with values for >= {min_coverage:.0%} of materials (coverage: {tried})"
        return StrategyResult("forward", [], info={"skipped": reason, "coverage": tried})
    known = np.flatnonzero(np.isfinite(values))
    order = known[np.lexsort((data.materials[known].astype(str), values[known]))]
    bins = np.full(data.n_materials, -1, dtype=np.int64)
    for b, part in enumerate(np.array_split(order, k)):
        bins[part] = b
    folds = []
    edges = []
    for i in range(1, k):
        fold = hold_out(data.n_materials, bins >= i, float(params.get("val_fraction", 0.1)), rng, f"{name} bins >= {i}")
        fold.notes["train_max"] = float(values[bins == i - 1].max())
        fold.notes["test_min"] = float(values[bins == i].min())
        edges.append(fold.notes["test_min"])
        folds.append(fold)
    info = {
        "property": name,
        "coverage": tried,
        "k": k,
        "bin_lower_edges": edges,
        "missing_in_train": int((bins < 0).sum()),
        "test": "all materials above the training bins",
    }
    return StrategyResult("forward", folds, cluster=bins, info=info)
