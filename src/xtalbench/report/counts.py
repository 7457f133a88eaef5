"""Counts through the pipeline as tables: the fetch → dedup → featurize → split funnel, and the
per-fold train / val / test sizes of every split strategy. Shared by the Markdown dataset card
and the site; read from the stage metrics (`metrics/<d>/{fetch,dedup,featurize,split}.json`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xtalbench.governance.gates import is_number


def _count(value: Any, unit: str = "frames") -> int | None:
    """A count given as a number or as the `unit` entry of a {frames, materials} dict."""
    if isinstance(value, Mapping):
        value = value.get(unit)
    return int(value) if is_number(value) else None


def funnel(fetch: Mapping[str, Any] | None, dedup: Mapping[str, Any] | None,
           featurize: Mapping[str, Any] | None, split: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """One row per step: {step, frames, materials, removed, why}; a stage not run yet is absent."""
    rows: list[dict[str, Any]] = []
    if fetch:
        rows.append({"step": "fetch: records read", "frames": _count(fetch.get("read")), "materials": None,
                     "removed": None, "why": ""})
        by_field = fetch.get("quarantined_by_field") or {}
        why = ", ".join(f"{k} {v}" for k, v in sorted(by_field.items())) if isinstance(by_field, Mapping) else ""
        rows.append({"step": "fetch: kept", "frames": _count(fetch.get("kept")), "materials": _count(fetch.get("materials")),
                     "removed": _count(fetch.get("quarantined")), "why": f"quarantined ({why})" if why else "quarantined"})
    if dedup:
        levels = dedup.get("levels") or {}
        for level, block in levels.items() if isinstance(levels, Mapping) else ():
            if not isinstance(block, Mapping):
                continue
            rule = f"{block.get('metric', '?')} ≤ {block.get('threshold', '?')}"
            rows.append({"step": f"dedup: {level} ({rule})", "frames": None, "materials": _count(block.get("kept")),
                         "removed": _count(block.get("dropped")), "why": "near-duplicate materials"})
        removed = [_count(dedup.get(k)) for k in ("dropped", "thinned", "quarantined")]
        rows.append({"step": "dedup: kept", "frames": _count(dedup.get("kept")),
                     "materials": _count(dedup.get("kept"), "materials"),
                     "removed": sum(r for r in removed if r is not None) if any(r is not None for r in removed) else None,
                     "why": "frames dropped + thinned + quarantined"})
    if featurize:
        rows.append({"step": "featurize: featurized", "frames": _count(featurize.get("rows_written")), "materials": None,
                     "removed": _count(featurize.get("quarantined")), "why": "quarantined"})
    if split:
        block = split.get("input") or {}
        rows.append({"step": "split: input", "frames": _count(block.get("featurized")), "materials": None,
                     "removed": _count(block.get("not_featurized")), "why": "not featurized"})
    return rows


def fold_sizes(split: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """One row per strategy × fold: {strategy, fold, name, train, val, test}, folds in numeric order."""
    rows: list[dict[str, Any]] = []
    strategies = (split or {}).get("strategies") or {}
    for strategy, block in sorted(strategies.items()) if isinstance(strategies, Mapping) else ():
        folds = block.get("folds") if isinstance(block, Mapping) else None
        if not isinstance(folds, Mapping):
            continue
        for fold, sizes in sorted(folds.items(), key=lambda kv: (not str(kv[0]).isdigit(), int(kv[0]) if str(kv[0]).isdigit() else 0, str(kv[0]))):
            if isinstance(sizes, Mapping):
                rows.append({"strategy": strategy, "fold": str(fold), "name": sizes.get("name", ""),
                             **{role: _count(sizes.get(role)) for role in ("train", "val", "test")}})
    return rows
