"""Novelty of a test material: its distance to the nearest training material in SOAP space.

SOAP vectors (averaged per structure, from `features.parquet`) are standardised with the
training rows' mean and spread; the distance is Euclidean divided by √dimension, so it reads as
an RMS difference in training-standard-deviation units.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.neighbors import NearestNeighbors


def nearest_train_distance(train: np.ndarray, query: np.ndarray) -> np.ndarray:
    train = np.asarray(train, dtype=np.float64)
    query = np.asarray(query, dtype=np.float64)
    mean, std = train.mean(0), train.std(0)
    std[std == 0] = 1.0
    nn = NearestNeighbors(n_neighbors=1).fit((train - mean) / std)
    distance, _ = nn.kneighbors((query - mean) / std)
    return distance[:, 0] / np.sqrt(train.shape[1])


def binned(distance: np.ndarray, abs_error: np.ndarray, covered: np.ndarray | None, groups: np.ndarray, n_bins: int, n_bootstrap: int, seed: int) -> list[dict[str, Any]]:
    """MAE (and coverage) per quantile bin of novelty, with material-bootstrap 95% CIs."""
    from xtalbench.finetune.screening import bootstrap_mae_ci

    if len(distance) == 0:
        return []
    edges = np.unique(np.quantile(distance, np.linspace(0, 1, n_bins + 1)))
    which = np.clip(np.searchsorted(edges, distance, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        mask = which == b
        if not mask.any():
            continue
        row: dict[str, Any] = {
            "bin": b, "distance_lo": float(edges[b]), "distance_hi": float(edges[b + 1]), "n": int(mask.sum()),
            "mae_meV_per_atom": float(abs_error[mask].mean() * 1000),
            "mae_ci95_meV_per_atom": [c * 1000 for c in bootstrap_mae_ci(abs_error[mask], groups[mask], n_bootstrap, seed + b)],
        }
        if covered is not None:
            row["coverage"] = float(covered[mask].mean())
            row["coverage_ci95"] = bootstrap_mae_ci(covered[mask].astype(np.float64), groups[mask], n_bootstrap, seed + b)
        rows.append(row)
    return rows
