"""MD-HIT-style greedy redundancy removal, exact, on a nearest-neighbour index.

MD-HIT (Hu et al., npj Comput. Mater. 2024) visits candidates in a fixed order and keeps one
iff its distance to every already-kept row exceeds the threshold: a row is **dropped iff some
earlier kept row lies at distance <= threshold + ε** (ε = `dedup.epsilon`, default 1e-9, so
mathematical ties are dropped whatever the float rounding). The reference code compares each candidate
with every kept row in Python. Here candidates go in blocks; each block is checked against

- the rows kept in earlier blocks, through radius queries on KD-trees over the kept rows
  (a logarithmic set of trees, so no tree is rebuilt per kept row; a query only returns
  *kept* neighbours, of which there are few since kept rows are pairwise far apart),
- rows kept earlier in the same block, with a block x block distance matrix.

The trees index a low-dimensional *contractive projection* of the rows (sums over contiguous
column groups; for Euclidean, scaled by 1/sqrt(group size)): its distance is a lower bound of
the true one (triangle inequality / Cauchy-Schwarz), so a radius query on it returns a superset
of the true neighbours, never misses one, and KD-trees stay fast in 16 dimensions where they
are slow in the 102 of an ElMD vector. For cumulative ElMD vectors the bound is nearly tight.

Index distances are only used to find candidates (radius inflated by 1e-9 relative); every
decision uses `pair_distances`, the one canonical distance function the naive algorithm also
uses, so floating-point ties at the threshold fall exactly as in the naive loop.
The representative of a dropped row is its nearest earlier kept row (ties: earliest in order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METRICS = ("manhattan", "euclidean")
_SLACK = 1e-9  # relative radius inflation for index candidate queries
# Ties at the threshold: dropped iff distance <= threshold + EPSILON (params dedup.epsilon). A
# mathematical tie (an ElMD of exactly 0.2 between rational compositions) comes out of float
# arithmetic as 0.2 ± a few 1e-17; without a tolerance it falls either way on rounding noise.
DEFAULT_EPSILON = 1e-9
_BUFFER = 512  # kept rows held outside trees before they are indexed
_PROJECTED_DIMS = 16
# Candidate pairs are compared in chunks of at most this many (pair, feature) values, so memory
# is bounded whatever the threshold: a large sweep threshold on 901-point XRD patterns makes
# nearly every (row, kept row) pair a candidate (18.4 GB materialised at once on 4,764
# structures). 4M values = 32 MB per float64 temporary, ~0.1 GB peak for the chunk.
PAIR_BUDGET = 4_000_000


def chunked_pair_distances(
    XA: np.ndarray, ia: np.ndarray, XB: np.ndarray, ib: np.ndarray, metric: str, budget: int | None = PAIR_BUDGET
) -> np.ndarray:
    """`pair_distances(XA[ia], XB[ib])` computed `budget // n_features` pairs at a time.

    Row-wise distances do not depend on which other rows share a chunk, so the values are
    the same bits as the unchunked call; `budget=None` is that call (the old, unbounded path)."""
    if budget is None or len(ia) * XA.shape[1] <= budget:
        return pair_distances(XA[ia], XB[ib], metric)
    step = max(1, budget // max(1, XA.shape[1]))
    out = np.empty(len(ia), dtype=np.float64)
    for lo in range(0, len(ia), step):
        out[lo : lo + step] = pair_distances(XA[ia[lo : lo + step]], XB[ib[lo : lo + step]], metric)
    return out


def pair_distances(A: np.ndarray, B: np.ndarray, metric: str) -> np.ndarray:
    """Row-wise distances d(A[k], B[k]) (broadcasting): the canonical distance of this module."""
    diff = np.subtract(A, B, dtype=np.float64)
    if metric == "manhattan":
        return np.abs(diff).sum(axis=-1)
    if metric == "euclidean":
        return np.sqrt(np.square(diff).sum(axis=-1))
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


@dataclass(frozen=True)
class GreedyResult:
    """Per input row: kept?, the kept row standing for it (itself if kept), and the distance."""

    kept: np.ndarray  # bool (n,)
    representative: np.ndarray  # int64 (n,), input row index
    distance: np.ndarray  # float64 (n,), 0 for kept rows

    @property
    def n_kept(self) -> int:
        return int(self.kept.sum())


def contractive_projection(d: int, metric: str, dims: int = _PROJECTED_DIMS) -> np.ndarray:
    """(d, k) matrix P with dist(xP, yP) <= dist(x, y): sums over contiguous column groups."""
    k = min(dims, d)
    edges = np.linspace(0, d, k + 1).astype(np.int64)
    P = np.zeros((d, k), dtype=np.float64)
    for g in range(k):
        P[edges[g] : edges[g + 1], g] = 1.0 if metric == "manhattan" else 1.0 / np.sqrt(edges[g + 1] - edges[g])
    return P


class _KeptIndex:
    """Kept rows (projected), queryable by radius: KD-trees of doubling sizes plus a buffer."""

    def __init__(self, Z: np.ndarray, metric: str, buffer_size: int = _BUFFER):
        self.Z, self.metric, self.buffer_size = Z, metric, buffer_size
        self.trees: list[tuple[object, np.ndarray]] = []  # (KDTree, positions)
        self.buffer: list[int] = []

    def add(self, positions: list[int]) -> None:
        self.buffer.extend(positions)
        if len(self.buffer) < self.buffer_size:
            return
        from sklearn.neighbors import KDTree

        pos = np.asarray(self.buffer, dtype=np.int64)
        self.buffer = []
        while self.trees and len(self.trees[-1][1]) <= len(pos):  # merge equal-sized levels
            pos = np.concatenate([self.trees.pop()[1], pos])
        self.trees.append((KDTree(self.Z[pos], leaf_size=40, metric=self.metric), pos))

    def candidates(self, block: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
        """(row in block, position of kept row) pairs whose projected distance is <= radius."""
        rows, cols = [], []
        for tree, pos in self.trees:
            ind = tree.query_radius(block, r=radius)  # type: ignore[attr-defined]
            counts = np.fromiter((len(i) for i in ind), dtype=np.int64, count=len(ind))
            if counts.sum():
                rows.append(np.repeat(np.arange(len(block)), counts))
                cols.append(pos[np.concatenate(ind)])
        if self.buffer:
            pos = np.asarray(self.buffer, dtype=np.int64)
            r, c = np.nonzero(_cdist(block, self.Z[pos], self.metric) <= radius)
            rows.append(r)
            cols.append(pos[c])
        if not rows:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(rows), np.concatenate(cols)


def _cdist(A: np.ndarray, B: np.ndarray, metric: str) -> np.ndarray:
    from scipy.spatial.distance import cdist

    return cdist(A, B, metric="cityblock" if metric == "manhattan" else "euclidean")


def greedy_select(
    X: np.ndarray,
    threshold: float,
    metric: str = "manhattan",
    order: np.ndarray | None = None,
    block_size: int = 256,
    progress: bool = False,
    buffer_size: int = _BUFFER,
    pair_budget: int | None = PAIR_BUDGET,
    epsilon: float = DEFAULT_EPSILON,
) -> GreedyResult:
    """Exact MD-HIT greedy selection of the rows of `X` visited in `order` (default: row order).

    `pair_budget` bounds the candidate pairs' memory (see PAIR_BUDGET; None = unbounded).
    A row is dropped iff an earlier kept row lies at distance <= threshold + `epsilon`."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    identity = order is None
    order = np.arange(n) if order is None else np.asarray(order, dtype=np.int64)
    if not identity and (order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n))):
        raise ValueError("order must be a permutation of the row indices")
    if X.ndim != 2 or not all(np.isfinite(X[s : s + 4096]).all() for s in range(0, n, 4096)):
        raise ValueError("X must be a finite 2-D array")
    # rows already in visit order (order=None) are used in place: no copy of a large X
    Xo = np.ascontiguousarray(X) if identity else np.ascontiguousarray(X[order])
    Zo = Xo @ contractive_projection(X.shape[1], metric)
    if not np.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon}")
    cut = threshold + epsilon  # every decision: distance <= cut
    radius = cut * (1 + _SLACK) + _SLACK
    kept = np.zeros(n, dtype=bool)  # by position in order
    rep = np.arange(n, dtype=np.int64)
    dist = np.zeros(n, dtype=np.float64)
    index = _KeptIndex(Zo, metric, buffer_size)
    starts = range(0, n, block_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="dedup", unit="block", leave=False)
    for start in starts:
        stop = min(start + block_size, n)
        block = Xo[start:stop]
        m = stop - start
        best_d = np.full(m, np.inf)
        best_j = np.full(m, n, dtype=np.int64)
        # 1. kept rows of earlier blocks
        r, c = index.candidates(Zo[start:stop], radius)
        if len(r):
            d = chunked_pair_distances(block, r, Xo, c, metric, pair_budget)
            hit = d <= cut
            _update_best(best_d, best_j, r[hit], c[hit], d[hit])
        # 2. earlier rows of this block: decided in order, since keeping one affects the next
        r, c = np.nonzero(np.tril(_cdist(Zo[start:stop], Zo[start:stop], metric) <= radius, k=-1))
        d = chunked_pair_distances(block, r, block, c, metric, pair_budget)
        hit = d <= cut
        r, c, d = r[hit], c[hit], d[hit]
        bounds = np.searchsorted(r, np.arange(m + 1))  # np.nonzero is row-major: r is sorted
        new_kept: list[int] = []
        for i in range(m):
            lo, hi = bounds[i], bounds[i + 1]
            for k in range(lo, hi):
                j = c[k]
                if kept[start + j] and (d[k] < best_d[i] or (d[k] == best_d[i] and start + j < best_j[i])):
                    best_d[i], best_j[i] = d[k], start + j
            if best_j[i] == n:
                kept[start + i] = True
                new_kept.append(start + i)
            else:
                rep[start + i], dist[start + i] = best_j[i], best_d[i]
        index.add(new_kept)
    # positions in order → input row indices
    out_kept = np.zeros(n, dtype=bool)
    out_kept[order] = kept
    out_rep = np.empty(n, dtype=np.int64)
    out_rep[order] = order[rep]
    out_dist = np.empty(n, dtype=np.float64)
    out_dist[order] = dist
    return GreedyResult(out_kept, out_rep, out_dist)


def _update_best(best_d: np.ndarray, best_j: np.ndarray, rows: np.ndarray, cols: np.ndarray, d: np.ndarray) -> None:
    """Per row, the nearest candidate (ties: smallest position)."""
    if not len(rows):
        return
    sel = np.lexsort((cols, d, rows))  # by row, then distance, then position
    rows, cols, d = rows[sel], cols[sel], d[sel]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    rows, cols, d = rows[first], cols[first], d[first]
    better = (d < best_d[rows]) | ((d == best_d[rows]) & (cols < best_j[rows]))
    best_d[rows[better]], best_j[rows[better]] = d[better], cols[better]



# --- the stage: frames (streamed) → kept frames, clusters, metrics --------------------------
#
# The stage never holds the frames table. It reads the input in row-group batches, three times:
#   1. `scan_materials`: material_id, nsites (and numbers for the reduced_natoms order) → the
#      material of every row and each material's judged frame (its last row);
#   2. `describe`, per level: only the judged frames of the materials still alive, whose
#      descriptors (one float64 row per material, in visit order) are the only large array;
#   3. `_write_outputs`: every row again, written to the kept-frames and clusters sinks one
#      batch at a time (trajectory thinning runs here, holding the reference frame of the open
#      trajectories of materials whose last row has not been passed yet).
# Memory: ~8 B per frame (row → material), a few hundred B per material, the descriptor matrix
# (materials x columns x 8 B) and one batch of frames.

LEVELS = ("composition", "structure")
ORDERS = ("nsites", "reduced_natoms", "material_id", "input")
_CHUNK = 4096  # rows per in-place compaction step


def clusters_schema():
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("frame_id", pa.string(), nullable=False),
            pa.field("material_id", pa.string(), nullable=False),
            pa.field("level", pa.string()),  # the level that dropped/quarantined it; null if kept
            pa.field("representative", pa.string(), nullable=False),  # material_id standing for it
            pa.field("distance", pa.float64()),  # to the representative's judged frame; 0 if kept
            pa.field("reason", pa.string(), nullable=False),  # kept | near-duplicate | thinned | quarantined: …
        ]
    )


@dataclass
class Materials:
    """One entry per material_id (first-appearance order), judged by its last frame in input
    order (relaxed / final step)."""

    ids: list[str]
    frame_rows: np.ndarray  # input row of the judged frame, per material
    of_row: np.ndarray  # material index, per input row
    nsites: np.ndarray | None = None  # atoms in the judged frame, per material
    reduced_natoms: np.ndarray | None = None  # atoms in its reduced formula (only if asked for)


def _bar(iterable, progress: bool, **kwargs):
    if not progress:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, leave=False, **kwargs)


def _grow(array: np.ndarray, size: int) -> np.ndarray:
    if size <= len(array):
        return array
    out = np.zeros(max(size, 2 * len(array)), dtype=array.dtype)
    out[: len(array)] = array
    return out


def _list_column(column) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, offsets) of a list column (chunked or not, sliced or not); null lists are empty."""
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lengths = array.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return array.flatten().to_numpy(zero_copy_only=False), offsets


def reduced_natoms_of(numbers_column) -> np.ndarray:
    """Atoms in the reduced formula of each row (sum of counts // gcd of counts; 0 if no atoms)."""
    flat, offsets = _list_column(numbers_column)
    n = len(offsets) - 1
    out = np.zeros(n, dtype=np.int64)
    if not len(flat):
        return out
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    z = flat.astype(np.int64) - int(flat.min())
    keys, counts = np.unique(rows * (int(z.max()) + 1) + z, return_counts=True)
    key_rows = keys // (int(z.max()) + 1)
    starts = np.flatnonzero(np.r_[True, key_rows[1:] != key_rows[:-1]])
    out[key_rows[starts]] = np.add.reduceat(counts, starts) // np.gcd.reduceat(counts, starts)
    return out


def scan_materials(source, need_reduced: bool = False, progress: bool = False) -> Materials:
    """Pass 1: the material of every row and each material's judged (last) frame, reading only
    material_id, nsites (and numbers when `need_reduced`) batch by batch."""
    from xtalbench.dedup.io import FrameSource

    source = source if isinstance(source, FrameSource) else FrameSource(source)
    index: dict[str, int] = {}
    of_row = np.empty(source.num_rows, dtype=np.int64)
    last = np.zeros(1024, dtype=np.int64)
    nsites = np.zeros(1024, dtype=np.int64)
    reduced = np.zeros(1024, dtype=np.int64)
    columns = ["material_id", "nsites"] + (["numbers"] if need_reduced else [])
    for start, batch in _bar(source.batches(columns), progress, total=source.n_batches(), desc="dedup: materials", unit="batch"):
        mids = batch.column("material_id").to_pylist()
        ks = np.fromiter((index.setdefault(m, len(index)) for m in mids), np.int64, len(mids))
        of_row[start : start + len(ks)] = ks
        last, nsites, reduced = (_grow(a, len(index)) for a in (last, nsites, reduced))
        batch_nsites = batch.column("nsites").to_numpy().astype(np.int64)
        batch_reduced = reduced_natoms_of(batch.column("numbers")) if need_reduced else None
        uniq, first_rev = np.unique(ks[::-1], return_index=True)
        pos = len(ks) - 1 - first_rev
        last[uniq] = start + pos
        nsites[uniq] = batch_nsites[pos]
        if need_reduced:
            reduced[uniq] = batch_reduced[pos]
    n = len(index)
    return Materials(list(index), last[:n].copy(), of_row, nsites[:n].copy(), reduced[:n].copy() if need_reduced else None)


def visit_order(ids: list[str], nsites: np.ndarray, reduced_natoms: np.ndarray | None, order: str) -> np.ndarray:
    """MD-HIT's order: ascending number of atoms; ties (and `material_id`) by material_id string.

    The relative order of two materials does not depend on which others are present."""
    if order not in ORDERS:
        raise ValueError(f"dedup.order must be one of {ORDERS}, got {order!r}")
    n = len(ids)
    if order == "input":
        return np.arange(n)
    by_id = np.argsort(np.asarray(ids, dtype=object).astype(str), kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[by_id] = np.arange(n)
    if order == "material_id":
        return by_id
    key = nsites if order == "nsites" else reduced_natoms
    return np.lexsort((rank, np.asarray(key, dtype=np.float64)))


class _Featurizer:
    """One level's descriptor, applied chunk by chunk: `columns` to read, `features(sub)` →
    (values of the rows that worked, their positions in `sub`, {position: FrameError})."""

    def __init__(self, level: str, metric: str, cfg: dict):
        if level == "composition":
            from xtalbench.descriptors.composition import KINDS, CompositionFeaturizer

            if metric not in KINDS:
                raise ValueError(f"dedup.metric.composition must be one of {KINDS}, got {metric!r}")
            self.model = CompositionFeaturizer(kind=metric, dtype="float64").fit()
            self.distance = self.model.metric
            self.columns: list[str] | None = ["frame_id", "numbers"]
        elif level == "structure":
            if metric == "xrd":
                from xtalbench.descriptors.xrd import XrdFeaturizer

                self.model = XrdFeaturizer(dtype="float64", progress=False, **(cfg.get("xrd") or {})).fit()
            elif metric != "soap":
                raise ValueError(f"dedup.metric.structure must be xrd or soap, got {metric!r}")
            self.distance = "euclidean"
            self.columns = None  # whole frames: to_structure / to_atoms
        else:
            raise ValueError(f"unknown dedup level {level!r} (have {LEVELS})")
        self.level, self.metric, self.cfg = level, metric, cfg

    def fit_species(self, species: list[int]) -> None:
        """SOAP's column layout: the species of all frames to describe (found in a first scan)."""
        from xtalbench.descriptors.soap import SoapFeaturizer

        self.model = SoapFeaturizer(dtype="float64", **{"species": species, **(self.cfg.get("soap") or {})}).fit()

    @property
    def n_features(self) -> int:
        return int(self.model.n_features_out_)

    def features(self, sub) -> tuple[np.ndarray, list[int], dict[int, Exception]]:
        from xtalbench.core.schema import FrameError, to_atoms, to_structure

        good: list[int] = []
        errors: dict[int, Exception] = {}
        if self.level == "composition":
            from collections import Counter

            items, names = [], []
            for k, (fid, numbers) in enumerate(zip(sub.column("frame_id").to_pylist(), sub.column("numbers").to_pylist())):
                try:
                    items.append(self.model.check(dict(Counter(numbers)), fid, "numbers"))
                except FrameError as error:
                    errors[k] = error
                    continue
                good.append(k)
                names.append(fid)
            X = self.model.transform(items, records=names, field="numbers") if items else np.zeros((0, self.n_features))
            return X, good, errors
        frames = sub.to_pylist()
        if self.metric == "xrd":
            out = []
            for k, frame in enumerate(frames):
                try:
                    out.append(self.model.pattern(to_structure(frame)))
                    good.append(k)
                except Exception as error:  # pymatgen raises many types for broken cells
                    errors[k] = FrameError(frame["frame_id"], "positions", f"XRD pattern failed: {error}")
            return np.asarray(out, dtype=np.float64).reshape(len(out), self.n_features), good, errors
        X = self.model.transform([to_atoms(frame, with_labels=False) for frame in frames])
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        X = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)  # unit norm: d in [0, 2]
        return X, list(range(len(frames))), errors


def describe(level: str, metric: str, source, rows: np.ndarray, cfg: dict, progress: bool = False):
    """Descriptor vectors of the frames at input `rows` (any order) at one level, streamed:
    only those rows are described, batch by batch.

    Returns (X float64 with one row per entry of `rows` that worked, in the order of `rows`;
    distance metric; {row: FrameError} of the rest; the rows that worked).
    """
    from xtalbench.dedup.io import FrameSource

    source = source if isinstance(source, FrameSource) else FrameSource(source)
    featurizer = _Featurizer(level, metric, cfg)
    rows = np.asarray(rows, dtype=np.int64)
    by_row = np.argsort(rows, kind="stable")
    sorted_rows = rows[by_row]

    def wanted(columns):
        """(slots in `rows`, input rows, sub-table) of the wanted rows, batch by batch."""
        for start, batch in source.batches(columns):
            lo, hi = np.searchsorted(sorted_rows, [start, start + batch.num_rows])
            if hi > lo:
                yield by_row[lo:hi], sorted_rows[lo:hi], batch.take(sorted_rows[lo:hi] - start)

    if level == "structure" and metric == "soap":
        species: set[int] = set()
        for _, _, sub in wanted(["numbers"]):
            species.update(np.unique(_list_column(sub.column("numbers"))[0]).tolist())
        if not species:
            raise ValueError("no species: pass `species` or fit on at least one structure")
        featurizer.fit_species(sorted(species))
    X = np.empty((len(rows), featurizer.n_features), dtype=np.float64)
    ok = np.zeros(len(rows), dtype=bool)
    errors: dict[int, Exception] = {}
    bar = _bar(None, progress, total=len(rows), desc=f"dedup: {level} {metric}", unit="frame")
    for slots, input_rows, sub in wanted(featurizer.columns):
        values, good, errs = featurizer.features(sub)
        X[slots[good]] = values
        ok[slots[good]] = True
        errors.update({int(input_rows[k]): e for k, e in errs.items()})
        if progress:
            bar.update(len(slots))
    if progress:
        bar.close()
    good_slots = np.flatnonzero(ok)
    if len(good_slots) < len(rows):  # drop failed rows in place (sources never behind targets)
        for s in range(0, len(good_slots), _CHUNK):
            src = good_slots[s : s + _CHUNK]
            X[s : s + len(src)] = X[src]
        X = X[: len(good_slots)]
    return X, featurizer.distance, errors, rows[good_slots]


def describe_cached(level: str, metric: str, source, rows: np.ndarray, cfg: dict, progress: bool, cache: dict | None, mats: Materials):
    """`describe` on every judged frame once per (level, metric), then subset to `rows`
    (copies: the cache costs one extra descriptor matrix)."""
    if cache is None:
        return describe(level, metric, source, rows, cfg, progress)
    key = (level, metric)
    if key not in cache:
        cache[key] = describe(level, metric, source, mats.frame_rows, cfg, progress)
    X, dist, errors, good_rows = cache[key]
    rows = np.asarray(rows, dtype=np.int64)
    where = np.full(len(mats.of_row), -1, dtype=np.int64)
    where[good_rows] = np.arange(len(good_rows))
    pos = where[rows]
    return X[pos[pos >= 0]], dist, {int(r): errors[int(r)] for r in rows if int(r) in errors}, rows[pos >= 0]


def dataset_config(cfg: dict, dataset: str) -> dict:
    """`dedup` params with `dedup.overrides.<dataset>` merged in (one level of nesting)."""
    merged = {k: v for k, v in cfg.items() if k != "overrides"}
    for key, value in ((cfg.get("overrides") or {}).get(dataset) or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _levels(cfg: dict) -> list[str]:
    level = cfg.get("level", "both")
    if level == "both":
        return list(LEVELS)
    if level not in LEVELS:
        raise ValueError(f"dedup.level must be composition, structure or both, got {level!r}")
    return [level]


def _per_level(cfg: dict, key: str, level: str):
    value = cfg[key]
    return value[level] if isinstance(value, dict) else value


def _materials(source, cfg: dict, progress: bool, cache: dict | None) -> Materials:
    if cache is not None and "materials" in cache:
        return cache["materials"]
    order = cfg.get("order", "nsites")
    if order not in ORDERS:
        raise ValueError(f"dedup.order must be one of {ORDERS}, got {order!r}")
    mats = scan_materials(source, need_reduced=order == "reduced_natoms", progress=progress)
    if cache is not None:
        cache["materials"] = mats
    return mats


def _visit(mats: Materials, materials: np.ndarray, order: str) -> np.ndarray:
    """`materials` (indices) in visit order."""
    ids = [mats.ids[k] for k in materials]
    reduced = None if mats.reduced_natoms is None else mats.reduced_natoms[materials]
    return materials[visit_order(ids, mats.nsites[materials], reduced, order)]


@dataclass
class _Outcome:
    """Per material: what happened to it (kept unless a level says otherwise)."""

    level: np.ndarray  # object: None | level name
    representative: np.ndarray  # int64 material index
    distance: np.ndarray  # float64; NaN when quarantined
    reason: np.ndarray  # object: kept | near-duplicate | quarantined: …

    @classmethod
    def all_kept(cls, n: int) -> _Outcome:
        return cls(np.full(n, None, dtype=object), np.arange(n, dtype=np.int64), np.zeros(n), np.full(n, "kept", dtype=object))


def _select(source, cfg: dict, mats: Materials, progress: bool, cache: dict | None) -> tuple[_Outcome, np.ndarray, dict]:
    """Pass 2 and the greedy, level after level on the survivors: (outcome, alive, level metrics)."""
    n_mat = len(mats.ids)
    alive = np.ones(n_mat, dtype=bool)
    outcome = _Outcome.all_kept(n_mat)
    level_metrics = {}
    for level in _levels(cfg):
        metric_name = _per_level(cfg, "metric", level)
        threshold = float(_per_level(cfg, "threshold", level))
        visit = _visit(mats, np.flatnonzero(alive), cfg.get("order", "nsites"))
        # X comes in visit order, so the greedy needs no permuted copy of it
        X, metric, errors, good_rows = describe_cached(level, metric_name, source, mats.frame_rows[visit], cfg, progress, cache, mats)
        for row, error in errors.items():
            k = int(mats.of_row[row])
            alive[k] = False
            outcome.level[k], outcome.distance[k], outcome.reason[k] = level, np.nan, f"quarantined: {error}"
        good = mats.of_row[good_rows]
        epsilon = float(cfg.get("epsilon", DEFAULT_EPSILON))
        result = greedy_select(X, threshold, metric, progress=progress, epsilon=epsilon)
        del X
        dropped = np.flatnonzero(~result.kept)
        alive[good[dropped]] = False
        outcome.level[good[dropped]] = level
        outcome.representative[good[dropped]] = good[result.representative[dropped]]
        outcome.distance[good[dropped]] = result.distance[dropped]
        outcome.reason[good[dropped]] = "near-duplicate"
        level_metrics[level] = {
            "metric": metric_name,
            "distance": metric,
            "threshold": threshold,
            "epsilon": epsilon,
            "read": int(len(visit)),
            "kept": int(result.n_kept),
            "dropped": int(len(dropped)),
            "quarantined": len(errors),
        }
    return outcome, alive, level_metrics


class _Thinner:
    """Trajectory thinning in streaming order: a frame is thinned when it is within `tolerance` Å
    (max atom or cell-vector displacement) of the last frame kept of its (material, trajectory)
    and is not its material's last frame. References are dropped at a material's last row, so
    memory holds the open materials only (one at a time when a material's frames are contiguous,
    as every source writes them; any order gives the same answer)."""

    def __init__(self, last_rows: np.ndarray, tolerance: float):
        self.last_rows, self.tolerance = last_rows, tolerance
        self.refs: dict[int, dict[str | None, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}

    def step(self, start: int, batch, materials: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = batch.num_rows
        thinned, moved = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.float64)
        trajs = batch.column("trajectory_id").to_pylist()
        (nums, n_off), (pos, p_off), (lat, l_off) = (_list_column(batch.column(c)) for c in ("numbers", "positions", "lattice"))
        for i in range(n):
            k = int(materials[i])
            is_last = int(self.last_rows[k]) == start + i
            refs = self.refs.setdefault(k, {})
            cur = (nums[n_off[i] : n_off[i + 1]], pos[p_off[i] : p_off[i + 1]], lat[l_off[i] : l_off[i + 1]])
            prev = refs.get(trajs[i])
            if prev is not None and not is_last and np.array_equal(prev[0], cur[0]):
                d = max(
                    float(np.abs(np.subtract(cur[1], prev[1])).reshape(-1, 3).max(initial=0.0)),
                    float(np.abs(np.subtract(cur[2], prev[2])).max(initial=0.0)),
                )
                if d <= self.tolerance:
                    thinned[i], moved[i] = True, d
                    continue
            if is_last:
                del self.refs[k]
            else:
                refs[trajs[i]] = (cur[0].copy(), cur[1].copy(), cur[2].copy())
        return thinned, moved


def _write_outputs(source, mats: Materials, outcome: _Outcome, cfg: dict, kept_sink, clusters_sink, progress: bool) -> dict[str, int]:
    """Pass 3: every input row → the clusters sink; rows of kept materials → the kept sink."""
    import pyarrow as pa

    thinner = _Thinner(mats.frame_rows, float(cfg.get("thin_tolerance", 0.01))) if cfg.get("thin_trajectories", False) else None
    ids = np.asarray(mats.ids, dtype=object)
    schema = clusters_schema()
    kept_mat = outcome.reason == "kept"
    dropped_mat = outcome.reason == "near-duplicate"
    counts = {"kept": 0, "dropped": 0, "quarantined": 0, "thinned": 0}
    for start, batch in _bar(source.batches(), progress, total=source.n_batches(), desc="dedup: write", unit="batch"):
        k = mats.of_row[start : start + batch.num_rows]
        level, rep = outcome.level[k], ids[outcome.representative[k]]
        distance, reason = outcome.distance[k], outcome.reason[k]
        if thinner is not None:
            thinned, moved = thinner.step(start, batch, k)
            level[thinned], rep[thinned], distance[thinned], reason[thinned] = "trajectory", ids[k[thinned]], moved[thinned], "thinned"
        else:
            thinned = np.zeros(len(k), dtype=bool)
        keep = kept_mat[k] & ~thinned
        dropped = dropped_mat[k] & ~thinned
        counts["kept"] += int(keep.sum())
        counts["dropped"] += int(dropped.sum())
        counts["quarantined"] += int(len(k) - keep.sum() - dropped.sum() - thinned.sum())
        counts["thinned"] += int(thinned.sum())
        kept_sink.write(batch.filter(pa.array(keep)))
        clusters_sink.write(
            pa.table(
                {
                    "frame_id": batch.column("frame_id"),
                    "material_id": batch.column("material_id"),
                    "level": pa.array(level, pa.string()),
                    "representative": pa.array(rep, pa.string()),
                    "distance": pa.array(distance, mask=np.isnan(distance)),
                    "reason": pa.array(reason, pa.string()),
                },
                schema=schema,
            )
        )
    return counts


def dedup_stream(source, kept_sink, clusters_sink, cfg: dict, progress: bool = False, cache: dict | None = None) -> dict:
    """The dedup stage in bounded memory: streams `source` (a `FrameSource`), writes the kept
    frames and the clusters table to the sinks (objects with `write(table)`), returns metrics.

    `cache` (a dict) keeps the materials and each level's descriptors for reuse, e.g. by `sweep`."""
    mats = _materials(source, cfg, progress, cache)
    outcome, alive, level_metrics = _select(source, cfg, mats, progress, cache)
    counts = _write_outputs(source, mats, outcome, cfg, kept_sink, clusters_sink, progress)
    dropped_mat = int((outcome.reason == "near-duplicate").sum())
    metrics = {
        "read": {"frames": source.num_rows, "materials": len(mats.ids)},
        "kept": {"frames": counts["kept"], "materials": int(alive.sum())},
        "dropped": {"frames": counts["dropped"], "materials": dropped_mat},
        "quarantined": {"frames": counts["quarantined"], "materials": int((~alive).sum()) - dropped_mat},
        "thinned": {"frames": counts["thinned"]},
        "levels": level_metrics,
        "order": cfg.get("order", "nsites"),
    }
    total = counts["kept"] + counts["dropped"] + counts["quarantined"] + counts["thinned"]
    if total != source.num_rows:
        raise RuntimeError(f"dedup lost rows: read {source.num_rows}, accounted for {total}")
    return metrics


def dedup_file(frames, kept_path, clusters_path, cfg: dict, progress: bool = False, cache: dict | None = None,
               batch_rows: int | None = None) -> dict:
    """The dedup stage from a frames Parquet file to `dedup.parquet` and `dedup_clusters.parquet`,
    streamed (bytes equal `write_parquet` of `run_dedup`'s tables). Returns the metrics."""
    from xtalbench.dedup.io import BATCH_ROWS, FrameSource, file_sink

    source = FrameSource(frames, batch_rows or BATCH_ROWS)
    with file_sink(kept_path, source.schema) as kept, file_sink(clusters_path, clusters_schema()) as clusters:
        return dedup_stream(source, kept, clusters, cfg, progress, cache)


def run_dedup(table, cfg: dict, progress: bool = False, cache: dict | None = None, batch_rows: int | None = None):
    """The dedup stage on an in-memory frames table: (kept frames, clusters table, metrics dict)."""
    from xtalbench.dedup.io import BATCH_ROWS, FrameSource, TableSink

    source = FrameSource(table, batch_rows or BATCH_ROWS)
    kept, clusters = TableSink(source.schema), TableSink(clusters_schema())
    metrics = dedup_stream(source, kept, clusters, cfg, progress, cache)
    return kept.result(), clusters.result(), metrics


def sweep(source, cfg: dict, thresholds: dict[str, list[float]], progress: bool = False, cache: dict | None = None) -> list[dict]:
    """Kept materials against threshold, per level, each level on all materials on its own.

    `source`: a frames Parquet path, a table or a `FrameSource`."""
    from xtalbench.dedup.io import FrameSource

    source = source if isinstance(source, FrameSource) else FrameSource(source)
    mats = _materials(source, cfg, progress, cache)
    rows = []
    for level in _levels(cfg):
        metric_name = _per_level(cfg, "metric", level)
        visit = _visit(mats, np.arange(len(mats.ids)), cfg.get("order", "nsites"))
        X, metric, _, good_rows = describe_cached(level, metric_name, source, mats.frame_rows[visit], cfg, progress, cache, mats)
        for threshold in sorted(float(t) for t in thresholds.get(level, [])):
            kept = greedy_select(X, threshold, metric, epsilon=float(cfg.get("epsilon", DEFAULT_EPSILON))).n_kept
            rows.append({"level": level, "metric": metric_name, "threshold": threshold, "kept": kept, "read": len(good_rows)})
    return rows
