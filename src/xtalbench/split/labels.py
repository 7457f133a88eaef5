"""Leave-one-label-out: one fold per element (leave-one-element-out) or per crystal system."""

from __future__ import annotations

from typing import Any

import numpy as np

from xtalbench.split.common import StrategyResult, hold_out
from xtalbench.split.data import SplitData

CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")
_BOUNDS = (2, 15, 74, 142, 167, 194, 230)


def crystal_system(number: int) -> str:
    """International Tables space-group number → crystal system."""
    number = int(number)
    if not 1 <= number <= 230:
        raise ValueError(f"space group number {number} is not in 1..230")
    return CRYSTAL_SYSTEMS[int(np.searchsorted(_BOUNDS, number))]


def element_split(data: SplitData, params: dict[str, Any], seed: int) -> StrategyResult:
    """Fold per listed element: test = every material containing it (train never sees it)."""
    rng = np.random.default_rng(seed)
    elements = data.material_elements()
    min_test = int(params.get("min_test_materials", 1))
    folds, skipped = [], {}
    for element in params.get("elements") or []:
        test = np.array([element in els for els in elements])
        if test.sum() < min_test:
            skipped[element] = f"{int(test.sum())} materials contain it (< min_test_materials {min_test})"
            continue
        if test.all():
            skipped[element] = "every material contains it: nothing left to train on"
            continue
        folds.append(hold_out(data.n_materials, test, float(params.get("val_fraction", 0.1)), rng, element))
    info = {"elements": [f.name for f in folds], "skipped": skipped}
    return StrategyResult("element", folds, info=info)


def spacegroup_numbers(data: SplitData, symprec: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Space group of each material's representative frame: the table's value, else spglib."""
    reps = data.representatives()
    given = data.meta["spacegroup"].to_numpy() if "spacegroup" in data.meta else np.full(data.n_frames, np.nan)
    numbers = np.array([given[r] for r in reps], dtype=float)
    todo = np.flatnonzero(~np.isfinite(numbers))
    failed: dict[str, str] = {}
    if len(todo):
        numbers[todo], failed = _spglib_numbers(data, reps[todo], symprec)
    info = {"from_table": int(len(reps) - len(todo)), "computed": int(len(todo) - len(failed)), "failed": failed, "symprec": symprec}
    return numbers, info


def _spglib_numbers(data: SplitData, rows: np.ndarray, symprec: float) -> tuple[np.ndarray, dict[str, str]]:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
    from tqdm import tqdm

    from xtalbench.core.project import iter_batches
    from xtalbench.core.schema import to_structure

    if data.frames_path is None:
        raise ValueError("space groups are missing and there are no frames to compute them from")
    wanted = {str(data.meta["frame_id"].iloc[r]): i for i, r in enumerate(rows)}
    out = np.full(len(rows), np.nan)
    failed: dict[str, str] = {}
    columns = ["frame_id", "material_id", "lattice", "numbers", "positions", "pbc"]
    bar = tqdm(total=len(rows), desc="spacegroups", unit="structure")
    for batch in iter_batches(data.frames_path, columns=columns, batch_size=2048):
        for row in batch.to_pylist():
            i = wanted.get(row["frame_id"])
            if i is None:
                continue
            try:
                out[i] = SpacegroupAnalyzer(to_structure(row), symprec=symprec).get_space_group_number()
            except Exception as error:  # noqa: BLE001 - reported per material in the card
                failed[row["material_id"]] = f"{type(error).__name__}: {error}"
            bar.update(1)
    bar.close()
    return out, failed


def spacegroup_split(data: SplitData, params: dict[str, Any], seed: int) -> StrategyResult:
    """Fold per crystal system present; materials whose group is unknown stay in train."""
    rng = np.random.default_rng(seed)
    numbers, info = spacegroup_numbers(data, float(params.get("symprec", 0.1)))
    system = np.array([CRYSTAL_SYSTEMS.index(crystal_system(n)) if np.isfinite(n) else -1 for n in numbers])
    min_test = int(params.get("min_test_materials", 1))
    folds, skipped = [], {}
    for c, name in enumerate(CRYSTAL_SYSTEMS):
        test = system == c
        if test.sum() < min_test:
            if test.any():
                skipped[name] = f"{int(test.sum())} materials (< min_test_materials {min_test}); kept in train"
            continue
        folds.append(hold_out(data.n_materials, test, float(params.get("val_fraction", 0.1)), rng, name))
    info.update({"systems": [f.name for f in folds], "skipped": skipped, "unknown_in_train": int((system < 0).sum())})
    return StrategyResult("spacegroup", folds, cluster=system, info=info)
