"""Seeded random split by material: one hold-out fold, or K group folds."""

from __future__ import annotations

from typing import Any

import numpy as np

from xtalbench.split.common import StrategyResult, hold_out
from xtalbench.split.data import SplitData


def random_split(data: SplitData, params: dict[str, Any], seed: int) -> StrategyResult:
    rng = np.random.default_rng(seed)
    n = data.n_materials
    folds_n = int(params.get("folds", 1))
    val_fraction = float(params.get("val_fraction", 0.1))
    perm = rng.permutation(n)
    folds = []
    if folds_n <= 1:
        n_test = int(round(float(params.get("test_fraction", 0.1)) * n))
        test = np.zeros(n, dtype=bool)
        test[perm[:n_test]] = True
        folds.append(hold_out(n, test, val_fraction, rng, "random"))
    else:
        for i, part in enumerate(np.array_split(perm, folds_n)):
            test = np.zeros(n, dtype=bool)
            test[part] = True
            folds.append(hold_out(n, test, val_fraction, rng, f"random {i}"))
    return StrategyResult("random", folds, info={"folds": len(folds), "unit": "material"})
