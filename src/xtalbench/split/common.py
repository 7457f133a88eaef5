"""Folds decided per material, expanded to one row per frame per fold."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from xtalbench.core.errors import XtalbenchError
from xtalbench.split.data import SplitData

TRAIN, VAL, TEST = 0, 1, 2
ROLE_NAMES = np.array(["train", "val", "test"], dtype=object)

SPLIT_SCHEMA = pa.schema(
    [
        pa.field("frame_id", pa.string(), nullable=False),
        pa.field("material_id", pa.string(), nullable=False),
        pa.field("fold", pa.int32(), nullable=False),
        pa.field("role", pa.string(), nullable=False),
        pa.field("cluster", pa.int32()),
    ]
)


@dataclass
class Fold:
    """One fold: a role per material (TRAIN / VAL / TEST) and a human name ("cluster 2", "Li")."""

    name: str
    roles: np.ndarray
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class StrategyResult:
    strategy: str
    folds: list[Fold]
    cluster: np.ndarray | None = None  # per material; -1 = null
    info: dict[str, Any] = field(default_factory=dict)


def hold_out(n_materials: int, test: np.ndarray, val_fraction: float, rng: np.random.Generator, name: str) -> Fold:
    """Fold with materials `test` (bool mask) held out and a seeded random `val_fraction` of the rest as val."""
    roles = np.full(n_materials, TRAIN, dtype=np.int8)
    roles[test] = TEST
    rest = np.flatnonzero(~test)
    n_val = int(round(val_fraction * len(rest)))
    if n_val:
        roles[rng.choice(rest, n_val, replace=False)] = VAL
    return Fold(name, roles)


def to_table(result: StrategyResult, data: SplitData) -> pa.Table:
    """One row per frame per fold, sorted by (fold, frame_id)."""
    order = np.argsort(data.meta["frame_id"].to_numpy().astype(str), kind="stable")
    frame_ids = data.meta["frame_id"].to_numpy()[order]
    material_ids = data.meta["material_id"].to_numpy()[order]
    mat = data.material_of_frame[order]
    cluster = None if result.cluster is None else result.cluster[mat]
    tables = []
    for k, fold in enumerate(result.folds):
        tables.append(
            pa.table(
                {
                    "frame_id": pa.array(frame_ids, pa.string()),
                    "material_id": pa.array(material_ids, pa.string()),
                    "fold": pa.array(np.full(len(order), k, dtype=np.int32)),
                    "role": pa.array(ROLE_NAMES[fold.roles[mat]], pa.string()),
                    "cluster": pa.array(cluster, pa.int32(), mask=cluster < 0) if cluster is not None else pa.nulls(len(order), pa.int32()),
                },
                schema=SPLIT_SCHEMA,
            )
        )
    table = pa.concat_tables(tables) if tables else SPLIT_SCHEMA.empty_table()
    check_group_aware(table)
    return table


class LeakError(XtalbenchError, AssertionError):
    """A material appears on two sides of one fold."""


def check_group_aware(table: pa.Table) -> None:
    """Raise LeakError if any material_id has more than one role within a fold."""
    if table.num_rows == 0:
        return
    df = table.select(["fold", "material_id", "role"]).to_pandas()
    roles = df.groupby(["fold", "material_id"])["role"].nunique()
    bad = roles[roles > 1]
    if len(bad):
        fold, material = bad.index[0]
        raise LeakError(f"material {material!r} is on {bad.iloc[0]} sides of fold {fold}")
