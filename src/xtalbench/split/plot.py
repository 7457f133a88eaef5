"""The 2-D kernel-PCA map: materials coloured by LOCO cluster, one panel per held-out fold (PNG),
and its points as CSV for the site's interactive map."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xtalbench.split.common import TEST, VAL, StrategyResult

CSV_DIGITS = 5  # significant digits of the CSV's coordinates (a map, not data to refit)


def kpca_points(materials: np.ndarray, coords: np.ndarray, loco: StrategyResult | None, path: str | Path) -> Path:
    """Write material_id, kpc1, kpc2, cluster (empty where LOCO gave none), one row per material."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    y = coords[:, 1] if coords.shape[1] > 1 else np.zeros(len(coords))
    clusters = loco.cluster if loco is not None and loco.cluster is not None else np.full(len(coords), -1)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["material_id", "kpc1", "kpc2", "cluster"])
        for material, kpc1, kpc2, cluster in zip(materials, coords[:, 0], y, clusters):
            writer.writerow([material, f"{kpc1:.{CSV_DIGITS}g}", f"{kpc2:.{CSV_DIGITS}g}", "" if cluster < 0 else int(cluster)])
    return path


def kpca_map(coords: np.ndarray, loco: StrategyResult | None, path: str | Path, title: str = "") -> Path:
    """Write the map PNG (deterministic: no timestamp metadata)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folds = loco.folds if loco is not None else []
    panels = 1 + len(folds)
    cols = min(panels, 3)
    rows = int(np.ceil(panels / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    x, y = coords[:, 0], coords[:, 1] if coords.shape[1] > 1 else np.zeros(len(coords))
    ax = axes[0, 0]
    colour = loco.cluster if loco is not None else np.zeros(len(coords), int)
    scatter = ax.scatter(x, y, c=colour, cmap="tab10", s=6, linewidths=0)
    ax.set_title(f"{title} clusters" if loco is not None else title)
    if loco is not None:
        ax.legend(*scatter.legend_elements(), title="cluster", fontsize=7, loc="best")
    for i, fold in enumerate(folds, start=1):
        ax = axes.flat[i]
        test, val = fold.roles == TEST, fold.roles == VAL
        train = ~(test | val)
        ax.scatter(x[train], y[train], s=4, c="0.75", linewidths=0, label="train")
        ax.scatter(x[val], y[val], s=4, c="tab:blue", linewidths=0, label="val")
        ax.scatter(x[test], y[test], s=6, c="tab:red", linewidths=0, label="test")
        ax.set_title(f"fold {i - 1}: {fold.name} held out")
        ax.legend(fontsize=7, markerscale=2, loc="best")
    for ax in axes.flat[panels:]:
        ax.axis("off")
    for ax in axes.flat[:panels]:
        ax.set_xlabel("kPC 1")
        ax.set_ylabel("kPC 2")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path
