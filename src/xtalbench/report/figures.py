"""Figures for the site: Plotly figure specs (plain dicts, drawn by the vendored plotly.min.js)
built from the files the pipeline wrote, each with a static PNG fallback (the pipeline's own
PNG where there is one, else one drawn here with matplotlib).

Per-point figures carry hover text: the frame / material id and, where the dataset's
`dedup.parquet` is present, the formula.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xtalbench.core.errors import XtalbenchError
from xtalbench.governance.gates import is_number

MAX_POINTS = 3000  # points drawn per interactive figure (deterministic thinning: every k-th row)


class FigureError(XtalbenchError, ValueError):
    """An unreadable figure source; the message names the file and the column."""


def read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        raise FigureError(f"{path}: cannot read CSV: {err}") from err


def thin(rows: list[Any], limit: int = MAX_POINTS) -> list[Any]:
    """Every k-th row so that at most `limit` remain (order kept, deterministic)."""
    if len(rows) <= limit:
        return rows
    step = -(-len(rows) // limit)
    return rows[::step]


def _float(value: str, path: Path, column: str, line: int) -> float | None:
    if value in ("", None):
        return None
    try:
        return float(value)
    except ValueError:
        raise FigureError(f"{path}: line {line}: column `{column}` = {value!r} is not a number") from None


def formula_lookup(dataset_dir: Path) -> dict[str, tuple[str, str]]:
    """{frame_id: (material_id, formula)} from `datasets/<d>/dedup.parquet`, or {} when absent."""
    path = dataset_dir / "dedup.parquet"
    if not path.is_file():
        return {}
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        columns = [c for c in ("frame_id", "material_id", "formula") if c in schema.names]
        if "frame_id" not in columns:
            return {}
        table = pq.read_table(path, columns=columns).to_pydict()
    except (OSError, ValueError) as err:
        raise FigureError(f"{path}: cannot read frame_id/material_id/formula: {err}") from err
    n = len(table["frame_id"])
    mids, formulas = table.get("material_id", [""] * n), table.get("formula", [""] * n)
    return {f: (str(m or ""), str(x or "")) for f, m, x in zip(table["frame_id"], mids, formulas, strict=True)}


def parity(path: Path, quantity: str, lookup: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """Parity plot (prediction vs DFT) from an evaluate parity CSV, one trace per strategy."""
    rows = read_csv(path)
    for column in ("truth", "prediction"):
        if rows and column not in rows[0]:
            raise FigureError(f"{path}: missing column `{column}`")
    shown = thin(list(enumerate(rows, start=2)))  # numbered before thinning: errors name the file's line
    traces: dict[str, dict[str, Any]] = {}
    lo, hi = float("inf"), float("-inf")
    for line, row in shown:
        x = _float(row["truth"], path, "truth", line)
        y = _float(row["prediction"], path, "prediction", line)
        if x is None or y is None:
            continue
        lo, hi = min(lo, x, y), max(hi, x, y)
        name = row.get("strategy") or "all frames"
        trace = traces.setdefault(name, {"type": "scatter", "mode": "markers", "name": name, "x": [], "y": [],
                                         "text": [], "hoverinfo": "text+x+y", "marker": {"size": 4, "opacity": 0.6}})
        frame = row.get("frame_id", "")
        material, formula = lookup.get(frame, ("", ""))
        label = frame + (f" · {material}" if material and material != frame else "") + (f" · {formula}" if formula else "")
        if row.get("fold"):
            label += f" · fold {row['fold']}"
        trace["x"].append(x)
        trace["y"].append(y)
        trace["text"].append(label)
    data = list(traces.values())
    if lo <= hi:
        data.append({"type": "scatter", "mode": "lines", "name": "y = x", "x": [lo, hi], "y": [lo, hi],
                     "hoverinfo": "skip", "line": {"dash": "dot", "color": "#888"}})
    return {"data": data, "layout": _layout(f"Parity: {quantity}", f"DFT {quantity}", f"predicted {quantity}"),
            "n_points": len(rows), "n_shown": len(shown)}


DISPERSION_COLUMNS = ("material", "distance", "band", "frequency_dft_THz", "frequency_model_THz")


def is_dispersion(path: Path) -> bool:
    """Whether a CSV has the phonon band columns (material, distance, band, DFT and model frequency)."""
    rows = read_csv(path)
    return bool(rows) and all(c in rows[0] for c in DISPERSION_COLUMNS)


def dispersion_materials(path: Path) -> list[str]:
    return sorted({row["material"] for row in read_csv(path)})


def dispersion(path: Path, material: str) -> dict[str, Any]:
    """Phonon dispersion overlay of one material: DFT bands (grey) beside the model's (colour)."""
    bands: dict[tuple[str, str], dict[str, Any]] = {}
    for i, row in enumerate(read_csv(path)):
        if row["material"] != material:
            continue
        x = _float(row["distance"], path, "distance", i + 2)
        for source, column, style in (("DFT", "frequency_dft_THz", {"color": "#888", "dash": "dot"}),
                                      ("model", "frequency_model_THz", {"color": "#1f77b4"})):
            y = _float(row[column], path, column, i + 2)
            trace = bands.setdefault((source, row["band"]), {
                "type": "scatter", "mode": "lines", "name": source, "legendgroup": source,
                "showlegend": row["band"] == "0", "x": [], "y": [], "line": style,
                "hovertemplate": f"{material} {source} band {row['band']}: %{{y:.3f}} THz<extra></extra>"})
            trace["x"].append(x)
            trace["y"].append(y)
    return {"data": list(bands.values()), "layout": _layout(f"Phonon dispersion: {material}", "wave-vector path", "frequency (THz)")}


LINE_KINDS = {  # CSV name → (x column, y column, series column or None, title, x label, y label)
    "learning_curve.csv": ("n_train", "test_mae_meV_per_atom", None, "Learning curve", "training materials", "test MAE (meV/atom)"),
    "error_vs_novelty.csv": ("distance_lo", "mae_meV_per_atom", "fold", "Error vs novelty", "distance to training set (bin lower edge)",
                             "MAE (meV/atom)"),
}


def line_csv(path: Path) -> dict[str, Any] | None:
    """A line figure of a known CSV kind (learning curve, error vs novelty); None for others."""
    kind = LINE_KINDS.get(path.name)
    if kind is None:
        return None
    x_col, y_col, series, title, x_label, y_label = kind
    rows = read_csv(path)
    if rows and not all(c in rows[0] for c in (x_col, y_col)):
        raise FigureError(f"{path}: expected columns `{x_col}` and `{y_col}`")
    traces: dict[str, dict[str, Any]] = {}
    for i, row in enumerate(rows):
        name = f"{series} {row[series]}" if series and row.get(series) not in (None, "") else path.stem.replace("_", " ")
        trace = traces.setdefault(name, {"type": "scatter", "mode": "lines+markers", "name": name, "x": [], "y": []})
        trace["x"].append(_float(row[x_col], path, x_col, i + 2))
        trace["y"].append(_float(row[y_col], path, y_col, i + 2))
    return {"data": list(traces.values()), "layout": _layout(title, x_label, y_label)}


def kpca_map(path: Path, lookup: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """Interactive KPCA map from `plots/<d>/kpca_map.csv` (material_id, kpc1, kpc2[, cluster,
    formula]): one trace per cluster, hover = material id and formula."""
    rows = read_csv(path)
    for column in ("material_id", "kpc1", "kpc2"):
        if rows and column not in rows[0]:
            raise FigureError(f"{path}: missing column `{column}`")
    formulas = {m: f for m, f in lookup.values()}
    traces: dict[str, dict[str, Any]] = {}
    shown = thin(list(enumerate(rows, start=2)))  # numbered before thinning: errors name the file's line
    for line, row in shown:
        name = f"cluster {row['cluster']}" if row.get("cluster") not in (None, "") else "materials"
        trace = traces.setdefault(name, {"type": "scatter", "mode": "markers", "name": name, "x": [], "y": [], "text": [],
                                         "hoverinfo": "text", "marker": {"size": 5, "opacity": 0.7}})
        trace["x"].append(_float(row["kpc1"], path, "kpc1", line))
        trace["y"].append(_float(row["kpc2"], path, "kpc2", line))
        formula = row.get("formula") or formulas.get(row["material_id"], "")
        trace["text"].append(row["material_id"] + (f" · {formula}" if formula else ""))
    return {"data": [traces[k] for k in sorted(traces)], "layout": _layout("Kernel-PCA map", "kPC 1", "kPC 2"),
            "n_points": len(rows), "n_shown": len(shown)}


def dedup_sweep(path: Path, chosen: Mapping[str, Any] | None) -> dict[str, Any]:
    """Materials kept vs threshold, one line per level × metric; the chosen thresholds marked."""
    try:
        rows = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise FigureError(f"{path}: cannot read the dedup sweep: {err}") from err
    if not isinstance(rows, list):
        raise FigureError(f"{path}: expected a list of {{level, metric, threshold, kept}} rows")
    traces: dict[str, dict[str, Any]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or not is_number(row.get("threshold")) or not is_number(row.get("kept")):
            raise FigureError(f"{path}: row {i}: `threshold` and `kept` must be numbers")
        name = f"{row.get('level', '?')} · {row.get('metric', '?')}"
        trace = traces.setdefault(name, {"type": "scatter", "mode": "lines+markers", "name": name, "x": [], "y": []})
        trace["x"].append(row["threshold"])
        trace["y"].append(row["kept"])
    data = list(traces.values())
    for level, block in (chosen or {}).items():
        if isinstance(block, Mapping) and is_number(block.get("threshold")) and is_number(block.get("kept")):
            data.append({"type": "scatter", "mode": "markers", "name": f"chosen: {level} ≤ {block['threshold']:g}",
                         "x": [block["threshold"]], "y": [block["kept"]],
                         "marker": {"size": 12, "symbol": "star", "color": "#d62728"}})
    return {"data": data, "layout": _layout("Dedup threshold sweep", "threshold", "materials kept")}


def funnel(steps: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts through the pipeline as a funnel (frames where given, else materials)."""
    labels, values = [], []
    for step in steps:
        value = step.get("frames") if step.get("frames") is not None else step.get("materials")
        if value is not None:
            labels.append(step["step"])
            values.append(value)
    return {"data": [{"type": "funnel", "y": labels, "x": values, "textinfo": "value+percent initial"}],
            "layout": {**_layout("Counts through the pipeline", "", ""), "margin": {"l": 260}}}


def _layout(title: str, x: str, y: str) -> dict[str, Any]:
    return {"title": {"text": title}, "xaxis": {"title": {"text": x}}, "yaxis": {"title": {"text": y}},
            "height": 420, "margin": {"t": 50}, "legend": {"orientation": "h"}}


def fallback_png(figure: Mapping[str, Any], path: Path) -> Path:
    """A static PNG of a figure spec (scatter and funnel traces) drawn with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for trace in figure["data"]:
        if trace["type"] == "funnel":
            ax.barh(range(len(trace["x"])), trace["x"], color="#4c78a8")
            ax.set_yticks(range(len(trace["y"])), trace["y"], fontsize=7)
            ax.invert_yaxis()
        elif "lines" in trace.get("mode", ""):
            ax.plot(trace["x"], trace["y"], marker="o" if "markers" in trace["mode"] else None, label=trace["name"], lw=1)
        else:
            ax.scatter(trace["x"], trace["y"], s=6 if len(trace["x"]) > 1 else 60, label=trace["name"])
    layout = figure["layout"]
    ax.set_title(layout["title"]["text"])
    ax.set_xlabel(layout["xaxis"]["title"]["text"])
    ax.set_ylabel(layout["yaxis"]["title"]["text"])
    if any(t["type"] != "funnel" for t in figure["data"]):
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path
