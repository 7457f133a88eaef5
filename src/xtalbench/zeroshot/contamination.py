"""Contamination of a zero-shot set for one model: by material id and by database.

- by id: `training_set.ids_file` given → the share of the set's material ids it lists (`ids`);
  else a Materials Project training set and MP ids in the set → the share of `mp-` ids, an
  upper bound (`database-version`, as `xtalbench.evaluate.contamination`); else unknown (null).
- by database: the set's own database (from its frames' `source`) against the training set's:
  `same` (the set was drawn from the training data), `related` (same materials, other labels or
  configurations), `different`, with the reason.
"""

from __future__ import annotations

from typing import Any

from xtalbench.evaluate.contamination import (
    MP_DATABASE_NAMES,
    MP_PREFIX,
    read_ids_file,
    training_set_info,
)

# frames' meta `source` → (database, what the set is)
SET_DATABASES = {
    "MPtrj": ("MPtrj", "frames of MPtrj (Materials Project GGA/GGA+U relaxation trajectories, 2021)"),
    "Alexandria": ("Alexandria", "Alexandria PBE structures (Schmidt et al.), not in Materials Project"),
    "Internal": ("MatterSim", "MatterSim authors' DFT of high-temperature / high-pressure configurations"),
}


def _family(text: str) -> str:
    text = text.lower()
    for key, family in (("mptrj", "mptrj"), ("matpes", "matpes"), ("alex", "alexandria"), ("omat", "alexandria"), ("mpf", "mp")):
        if key in text:
            return family
    return "mp" if text in MP_DATABASE_NAMES or "materials project" in text else text


def by_database(spec: Any, set_source: str | None) -> dict[str, Any]:
    ts = training_set_info(spec)
    database, what = SET_DATABASES.get(set_source or "", (set_source or "unknown", "unknown source"))
    families = {_family(str(ts.get("name") or "")), _family(str(ts.get("database") or ""))}
    set_family = _family(database)
    if set_family in families:
        verdict, reason = "same", f"the set is {what}; {spec.name} was trained on {ts['name']}"
    elif set_family == "mptrj" and families & {"mp", "matpes"}:
        verdict, reason = "related", f"the set is {what}; {ts['name']} holds the same MP materials (other frames or labels)"
    elif set_family == "mattersim" and families & {"mp", "mptrj", "matpes"}:
        verdict, reason = "related", f"the set is {what}, perturbed from MP-like compositions; {ts['name']} has other configurations"
    else:
        verdict, reason = "different", f"the set is {what}; {spec.name} was trained on {ts['name']} ({ts['database']})"
    return {"set_database": database, "training_set": ts.get("name"), "training_database": ts.get("database"), "overlap": verdict, "reason": reason}


def by_id(spec: Any, material_ids: list[str]) -> dict[str, Any]:
    ts = training_set_info(spec)
    n = len(material_ids)
    if ts.get("ids_file"):
        listed = read_ids_file(ts["ids_file"])
        hits = sum(m in listed for m in material_ids)
        return {"method": "ids", "fraction": hits / n if n else None, "contained": hits, "materials": n}
    mp_like = _family(str(ts.get("name") or "")) in ("mp", "mptrj", "matpes") or _family(str(ts.get("database") or "")) == "mp"
    mp_ids = sum(str(m).startswith(MP_PREFIX) for m in material_ids)
    if mp_like:
        return {"method": "database-version", "fraction": mp_ids / n if n else None, "contained": mp_ids, "materials": n,
                "note": "upper bound: every mp- id counted as possibly in the training set (no id list offline)"}  # fmt: skip
    return {"method": "unknown", "fraction": None, "contained": None, "materials": n, "note": "no id list for this training set"}


def contamination(spec: Any, material_ids: list[str], set_source: str | None) -> dict[str, Any]:
    return {"by_id": by_id(spec, material_ids), "by_database": by_database(spec, set_source)}
