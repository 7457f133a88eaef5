"""A CSV of targets beside structure files (`local` source, `labels: <file.csv>`).

The CSV has a header row with an `id` column — the record id `local` gives a file's records
(`sub/x.cif` → `sub/x`; an extxyz frame's `frame_id`) — and any of LABEL_COLUMNS. Empty cells
are missing labels. A cell that is not a number quarantines that record (field = the column);
a CSV row whose id matches no record is quarantined too (field `labels`), so no target is
silently dropped; a CSV without `id`, with an unknown column or a repeated id stops the stage
naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xtalbench.core.errors import XtalbenchError
from xtalbench.core.schema import Rejected, raw_json

FLOAT_COLUMNS = ("energy", "formation_energy_per_atom", "e_above_hull", "band_gap")
INT_COLUMNS = ("spacegroup",)
TEXT_COLUMNS = ("material_id",)  # the group key, when several records are one material
LABEL_COLUMNS = FLOAT_COLUMNS + INT_COLUMNS + TEXT_COLUMNS


class LabelsError(XtalbenchError, ValueError):
    """A labels CSV that cannot be used at all: names the file, the line and the column."""


def read_labels(path: str | Path) -> dict[str, tuple[int, dict[str, str]]]:
    """id → (CSV line number, {column: cell}) for every row of the CSV."""
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"{path}: labels CSV not found")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        if "id" not in header:
            raise LabelsError(f"{path} line 1: no `id` column (have {header})")
        unknown = [c for c in header if c != "id" and c not in LABEL_COLUMNS]
        if unknown:
            raise LabelsError(f"{path} line 1: unknown column(s) {unknown}; known: id, {', '.join(LABEL_COLUMNS)}")
        rows: dict[str, tuple[int, dict[str, str]]] = {}
        for row in reader:
            line = reader.line_num
            key = (row.get("id") or "").strip()
            if not key:
                raise LabelsError(f"{path} line {line}: empty id")
            if key in rows:
                raise LabelsError(f"{path} line {line}: id {key!r} repeats line {rows[key][0]}")
            rows[key] = (line, {c: (row.get(c) or "").strip() for c in header if c != "id"})
    return rows


def apply_labels(records: Iterator[Any], path: str | Path) -> Iterator[Any]:
    """Records with their CSV labels set; then a Rejected for each CSV row no record matched."""
    labels = read_labels(path)
    used: set[str] = set()
    for record in records:
        if isinstance(record, dict) and record.get("frame_id") in labels:
            key = record["frame_id"]
            used.add(key)
            line, cells = labels[key]
            record = _labelled(record, cells, f"{path} line {line}")
        yield record
    for key, (line, cells) in labels.items():
        if key not in used:
            yield Rejected(key, "labels", f"{path} line {line}: no structure with this id", raw_json({"id": key, **cells}))


def _labelled(record: dict, cells: dict[str, str], where: str) -> dict | Rejected:
    out = dict(record)
    for column, text in cells.items():
        if not text:
            continue
        if column in TEXT_COLUMNS:
            out[column] = text
            continue
        try:
            value = float(text)
            if column in INT_COLUMNS:
                if value != int(value):
                    raise ValueError
                value = int(value)
            elif not math.isfinite(value):
                raise ValueError
        except ValueError:
            return Rejected(record["frame_id"], column, f"{where}: {column} {text!r} is not a finite number", raw_json(cells))
        out[column] = value
    return out
