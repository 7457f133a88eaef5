"""Parity plots (PNG) and their points (CSV, for `dvc plots`) of one model on one dataset.

`plots/<dataset>/<model>/parity_<quantity>.png` and `parity_<quantity>.csv` with columns
`frame_id, strategy, fold, truth, prediction` (strategy/fold empty for zero-shot models).
Large point sets (force components) are subsampled deterministically to `max_points`.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

QUANTITIES = {  # quantity → axis label
    "energy": "energy (eV/atom)",
    "e_form": "formation energy (eV/atom)",
    "forces": "force component (eV/Å)",
    "stress": "stress component (GPa)",
}


def subsample(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most `max_points` of `n` points (all when n ≤ max_points)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def write_points(path: str | Path, points: Mapping[str, Sequence[Any]]) -> Path:
    """CSV of parity points; floats in %.6g so the file is byte-stable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["frame_id", "strategy", "fold", "truth", "prediction"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row in zip(*(points[c] for c in columns), strict=True):
            frame_id, strategy, fold, truth, pred = row
            writer.writerow(
                [frame_id, strategy or "", "" if fold is None or fold != fold else int(fold), f"{truth:.6g}", f"{pred:.6g}"]
            )
    return path


def parity_plot(truth: np.ndarray, prediction: np.ndarray, path: str | Path, *, title: str, label: str, mae: float | None = None) -> Path:
    """Scatter of prediction vs truth with the y = x line; deterministic PNG (no metadata)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    truth = np.asarray(truth, dtype=np.float64)
    prediction = np.asarray(prediction, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    if truth.size:
        lo = float(min(truth.min(), prediction.min()))
        hi = float(max(truth.max(), prediction.max()))
        pad = 0.03 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=1, zorder=0)
        ax.scatter(truth, prediction, s=6, alpha=0.5, lw=0)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(f"DFT {label}")
    ax.set_ylabel(f"predicted {label}")
    subtitle = f"n = {truth.size}" + (f", MAE = {mae:.4g}" if mae is not None else "")
    ax.set_title(f"{title}\n{subtitle}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path


def write_parity(
    out_dir: str | Path,
    quantity: str,
    points: Mapping[str, Sequence[Any]],
    *,
    model: str,
    max_points: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Write parity_<quantity>.png and .csv; returns {n_points, n_plotted, png, csv}."""
    out_dir = Path(out_dir)
    n = len(points["truth"])
    keep = subsample(n, max_points, seed)
    sub = {k: [points[k][i] for i in keep] for k in ("frame_id", "strategy", "fold", "truth", "prediction")}
    truth = np.asarray(sub["truth"], dtype=np.float64)
    pred = np.asarray(sub["prediction"], dtype=np.float64)
    mae = float(np.abs(np.asarray(points["truth"], float) - np.asarray(points["prediction"], float)).mean()) if n else None
    csv_path = write_points(out_dir / f"parity_{quantity}.csv", sub)
    png_path = parity_plot(truth, pred, out_dir / f"parity_{quantity}.png", title=f"{model}: {quantity}", label=QUANTITIES[quantity], mae=mae)
    return {"n_points": n, "n_plotted": len(keep), "png": str(png_path), "csv": str(csv_path)}
