"""What the split strategies see: frames (ids, groups, metadata) and a chunked feature source.

Strategies decide at the material level (the group key), so a material can never straddle a
fold: every frame inherits its material's role. `representatives` picks one frame per
material (its last frame: highest `frame_index`, then the largest `frame_id`) for things that
need a single structure per material (the kernel-PCA fit, the crystal system).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xtalbench.core.errors import MissingInputError, XtalbenchError
from xtalbench.core.io import open_parquet, read_parquet
from xtalbench.core.project import iter_batches

META_COLUMNS = [
    "frame_id", "material_id", "elements", "nsites", "energy", "formation_energy_per_atom",
    "e_above_hull", "band_gap", "spacegroup", "frame_index", "structure_hash",
]


@dataclass
class SplitData:
    """Frames in a fixed order plus where their feature vectors come from.

    meta: one row per frame, in feature-file order (columns of META_COLUMNS that exist).
    features: a features Parquet path (streamed) or an in-memory (n, d) array.
    """

    meta: pd.DataFrame
    features: Path | np.ndarray
    feature_column: str = "soap"
    frames_path: Path | None = None
    chunk_rows: int = 2048
    materials: np.ndarray = field(init=False)
    material_of_frame: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.meta = self.meta.reset_index(drop=True)
        codes, uniques = pd.factorize(self.meta["material_id"], sort=True)
        self.materials = np.asarray(uniques, dtype=object)
        self.material_of_frame = codes.astype(np.int64)

    @property
    def n_frames(self) -> int:
        return len(self.meta)

    @property
    def n_materials(self) -> int:
        return len(self.materials)

    def chunks(self, column: str | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(frame row indices, feature matrix) chunk by chunk, in frame order."""
        column = column or self.feature_column
        if isinstance(self.features, np.ndarray):
            for start in range(0, self.n_frames, self.chunk_rows):
                stop = min(start + self.chunk_rows, self.n_frames)
                yield np.arange(start, stop), self.features[start:stop]
            return
        start = 0
        for batch in iter_batches(self.features, columns=[column], batch_size=self.chunk_rows):
            col = batch.column(0)
            width = col.type.list_size
            X = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
            yield np.arange(start, start + len(X)), X
            start += len(X)

    def has_feature(self, column: str) -> bool:
        if isinstance(self.features, np.ndarray):
            return column == self.feature_column
        return column in open_parquet(self.features).schema_arrow.names

    def gather(self, rows: np.ndarray, column: str | None = None) -> np.ndarray:
        """Feature rows `rows` (any order) as one array, in the order given."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        parts = []
        for idx, X in self.chunks(column):
            lo, hi = np.searchsorted(sorted_rows, [idx[0], idx[-1] + 1])
            if hi > lo:
                parts.append(np.asarray(X)[sorted_rows[lo:hi] - idx[0]])
        out = np.concatenate(parts) if parts else np.empty((0, 0), np.float32)
        result = np.empty_like(out)
        result[order] = out
        return result

    def representatives(self) -> np.ndarray:
        """One frame row per material (index into frames), ordered by material."""
        key = self.meta["frame_index"].fillna(-1).to_numpy() if "frame_index" in self.meta else np.zeros(self.n_frames)
        order = np.lexsort((self.meta["frame_id"].to_numpy(), key, self.material_of_frame))
        last = np.r_[self.material_of_frame[order][1:] != self.material_of_frame[order][:-1], True]
        return order[last]

    def frame_counts(self) -> np.ndarray:
        return np.bincount(self.material_of_frame, minlength=self.n_materials)

    def material_elements(self) -> list[frozenset[str]]:
        """Elements of each material (union over its frames)."""
        sets: list[set[str]] = [set() for _ in range(self.n_materials)]
        for m, els in zip(self.material_of_frame, self.meta["elements"]):
            sets[m].update(els)
        return [frozenset(s) for s in sets]


def load_split_data(features: str | Path, frames: str | Path, chunk_rows: int = 2048) -> tuple[SplitData, dict[str, Any]]:
    """Join the features file (its frame order) with frame metadata; report frames without features."""
    features, frames = Path(features), Path(frames)
    for path in (features, frames):
        if not path.exists():
            raise MissingInputError(f"{path} does not exist: run the stage that writes it first (dvc repro)")
    ids = read_parquet(features, columns=["frame_id", "material_id"]).to_pandas()  # InputError names an unreadable file
    available = open_parquet(frames).schema_arrow.names
    meta = read_parquet(frames, columns=[c for c in META_COLUMNS if c in available]).to_pandas()
    duplicated = ids["frame_id"].duplicated()
    if duplicated.any():
        raise XtalbenchError(f"{features}: frame_id {ids['frame_id'][duplicated].iloc[0]!r} appears twice")
    joined = ids.merge(meta.drop(columns=["material_id"]), on="frame_id", how="left", indicator=True, sort=False)
    missing = joined["_merge"] != "both"
    if missing.any():
        raise XtalbenchError(f"{features}: frame {joined['frame_id'][missing].iloc[0]!r} has features but no row in {frames}")
    joined = joined.drop(columns=["_merge"])
    not_featurized = len(meta) - len(joined)
    data = SplitData(joined, features, frames_path=frames, chunk_rows=chunk_rows)
    return data, {"frames": len(meta), "featurized": len(joined), "not_featurized": not_featurized}
