"""Dispersion overlays (DFT vs model) and the CSV tables `dvc plots` reads."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np


def dispersion_png(path: Path, plot: dict[str, Any], material: str, model: str, functional_ref: str) -> Path:
    """Band structure (DFT black, model red) and DOS side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref, mod = plot["bands_ref"], plot["bands_model"]
    fig, (ax, ax_dos) = plt.subplots(1, 2, figsize=(8, 4), gridspec_kw={"width_ratios": [4, 1]}, sharey=True)
    for seg in np.unique(ref["segment"]):
        m = ref["segment"] == seg
        lines_ref = ax.plot(ref["distances"][m], ref["frequencies"][m], color="black", lw=1.0)
        lines_mod = ax.plot(mod["distances"][m], mod["frequencies"][m], color="tab:red", lw=1.0, ls="--")
        if seg == 0:
            lines_ref[0].set_label(f"DFT ({functional_ref})")
            lines_mod[0].set_label(model)
    ticks, labels = _ticks(ref, plot["labels"], plot["connections"])
    ax.set_xticks(ticks, labels)
    for x in ticks:
        ax.axvline(x, color="0.8", lw=0.5)
    ax.axhline(0, color="0.6", lw=0.5)
    ax.set_xlim(ref["distances"].min(), ref["distances"].max())
    ax.set_ylabel("frequency (THz)")
    ax.set_title(f"{material}: {model} vs DFT")
    ax.legend(loc="best", fontsize=8)
    freq, dos_ref, dos_mod = plot["dos"]
    ax_dos.plot(dos_ref, freq, color="black", lw=1.0)
    ax_dos.plot(dos_mod, freq, color="tab:red", lw=1.0, ls="--")
    ax_dos.set_xlabel("DOS")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)
    return path


def _ticks(bands: dict[str, Any], labels: list[str], connections: list[bool]) -> tuple[list[float], list[str]]:
    """Tick positions at segment ends; a jump (no connection) shows as 'A|B'."""
    ticks: list[float] = []
    names: list[str] = []
    segments = np.unique(bands["segment"])
    label_iter = iter(labels)
    for k, seg in enumerate(segments):
        d = bands["distances"][bands["segment"] == seg]
        if k == 0:
            ticks.append(float(d[0]))
            names.append(next(label_iter, ""))
        end = next(label_iter, "")
        if not connections[k] and k + 1 < len(segments):
            end = f"{end}|{next(label_iter, '')}"
        ticks.append(float(d[-1]))
        names.append(end)
    return ticks, names


def write_csv(path: Path, header: list[str], rows: list[list[Any]], digits: int = 6) -> Path:
    """A CSV for `dvc plots` (floats with `digits` significant digits)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([f"{v:.{digits}g}" if isinstance(v, float) else v for v in row])
    return path
