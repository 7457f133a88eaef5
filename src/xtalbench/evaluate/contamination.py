"""How many test materials a model may have seen during training.

Three methods, chosen from the model spec:

- `fold-overlap` (pipeline-trained models, kind `mace-trained`): the model of a fold was trained
  on that fold's `train` rows, so contamination is the share of the fold's test materials that
  also appear among its training materials. A group-disjoint split gives exactly 0; anything
  else is a leaky split.
- `ids` (`training_set.ids_file` given): the share of test material ids listed in the file
  (text, one id per line, `#` comments; or Parquet/CSV with a `material_id` column).
- `database-version` (a Materials Project-derived training set without an id list, e.g. MPtrj
  = MP v2021.2.8): every `mp-` id is counted as potentially contained. The release date of
  each material is not available offline, so this is an **upper bound**; ids from other
  namespaces (`mvc-`, local ids) are counted as not contained.
- `unknown`: any other database without an id list; fractions are null.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

MP_PREFIX = "mp-"
MP_DATABASE_NAMES = ("materials project", "materialsproject", "mp", "mptrj", "mpf", "mp-api", "mp20", "mp-20")


def training_set_info(spec: Any) -> dict[str, Any]:
    """name, database, version, ids_file of a spec's training set (dataclass or mapping)."""
    ts = getattr(spec, "training_set", None) or {}
    get = ts.get if isinstance(ts, Mapping) else (lambda key, default=None: getattr(ts, key, default))
    return {key: get(key) for key in ("name", "database", "version", "ids_file")}


def read_ids_file(path: str | Path) -> set[str]:
    """Material ids from a text file (one per line) or a Parquet/CSV file with `material_id`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training_set.ids_file {path} does not exist")
    if path.suffix == ".parquet":
        from xtalbench.core.io import read_parquet

        table = read_parquet(path)  # InputError names a truncated or corrupted file
        if "material_id" not in table.column_names:
            raise ValueError(f"{path}: field 'material_id' missing (have: {', '.join(table.column_names)})")
        return {str(v) for v in table.column("material_id").to_pylist() if v is not None}
    if path.suffix == ".csv":
        import csv

        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if "material_id" not in (reader.fieldnames or []):
                raise ValueError(f"{path}: field 'material_id' missing in the CSV header")
            return {row["material_id"].strip() for row in reader if row["material_id"].strip()}
    ids = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.add(line)
    return ids


def is_mp_database(database: str | None, name: str | None = None) -> bool:
    """Whether a training-set database/name is derived from the Materials Project."""
    for value in (database, name):
        text = (value or "").strip().lower()
        if text in MP_DATABASE_NAMES or "materials project" in text or text.startswith(("mptrj", "mpf", "mp ")):
            return True
    return False


def _counts(test: set[str], contained: set[str]) -> dict[str, Any]:
    n = len(test)
    k = len(test & contained)
    return {"n_test_materials": n, "n_contained": k, "fraction": k / n if n else None}


def contamination(
    spec: Any,
    folds: Mapping[tuple[str, int], tuple[Iterable[str], Iterable[str]]],
) -> dict[str, Any]:
    """Contamination report of one model.

    `folds` maps (strategy, fold) → (test material ids, train material ids) for every fold the
    model is scored on. Returns the method, the pooled fraction over all test materials (each
    material once for zero-shot models; each (fold, material) pair for fold-trained models),
    and the per-fold fractions under `strategies.<s>.folds.<k>`.
    """
    info = training_set_info(spec)
    kind = getattr(spec, "kind", None)
    contained_ids: set[str] | None = None
    if kind == "mace-trained":
        method, upper_bound = "fold-overlap", False
        note = "share of each fold's test materials that are also in its training rows; 0 for a group-disjoint split"
    elif info.get("ids_file"):
        method, upper_bound = "ids", False
        contained_ids = read_ids_file(info["ids_file"])
        note = f"test material ids listed in {info['ids_file']}"
    elif is_mp_database(info.get("database"), info.get("name")):
        method, upper_bound = "database-version", True
        note = (
            f"no id list for {info.get('name')} ({info.get('database')} {info.get('version') or ''}): every "
            f"'{MP_PREFIX}' test id counts as potentially contained, an upper bound"
        ).replace("  ", " ")
    else:
        method, upper_bound = "unknown", False
        note = f"no id list and {info.get('database')!r} is not a known database: contamination unknown"

    per_strategy: dict[str, dict[str, Any]] = {}
    pooled_n = pooled_k = 0
    union_test: set[str] = set()
    for (strategy, fold), (test_ids, train_ids) in sorted(folds.items()):
        test = {str(t) for t in test_ids}
        if method == "fold-overlap":
            contained = {str(t) for t in train_ids}
        elif method == "ids":
            contained = contained_ids or set()
        elif method == "database-version":
            contained = {t for t in test if t.startswith(MP_PREFIX)}
        else:
            contained = None
        entry = _counts(test, contained) if contained is not None else {"n_test_materials": len(test), "n_contained": None, "fraction": None}
        per_strategy.setdefault(strategy, {"folds": {}})["folds"][str(fold)] = entry
        if method == "fold-overlap":
            pooled_n += entry["n_test_materials"]
            pooled_k += entry["n_contained"]
        union_test |= test

    if method == "fold-overlap":
        overall = {"n_test_materials": pooled_n, "n_contained": pooled_k, "fraction": pooled_k / pooled_n if pooled_n else None}
    elif method == "ids":
        overall = _counts(union_test, contained_ids or set())
    elif method == "database-version":
        overall = _counts(union_test, {t for t in union_test if t.startswith(MP_PREFIX)})
    else:
        overall = {"n_test_materials": len(union_test), "n_contained": None, "fraction": None}
    return {
        "method": method,
        "upper_bound": upper_bound,
        "note": note,
        "training_set": {k: v for k, v in info.items() if v is not None},
        **overall,
        "strategies": per_strategy,
    }
