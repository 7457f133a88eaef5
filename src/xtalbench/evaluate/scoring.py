"""`score_model`: a model's predictions joined with the labels and every split → metrics JSON.

1. Per prediction row, additive error sums (`metrics.row_stats`) and, on MP-labelled data, the
   predicted formation energy and hull distance (`thermo`).
2. Joined with `splits/<dataset>/<strategy>.parquet` on `frame_id` (zero-shot models: each
   frame was predicted once and serves every fold) or on (`strategy`, `fold`, `frame_id`)
   (fold-trained models: each fold's model predicted that fold's val+test rows).
3. Metrics per strategy × fold × role, the mean and std over folds, cluster sizes beside each
   fold's scores, contamination, the LOCO/random gap with a material-bootstrap CI.
4. `metrics/<dataset>/<model>.json` and `plots/<dataset>/<model>/parity_<quantity>.{png,csv}`.

Bounded memory: the predictions (a table, or a Parquet path streamed `batch_rows` rows at a
time) are read batch by batch, each batch's dedup rows are fetched by frame_id one row group at
a time (`TruthReader`; a sorted fixed-width id index, no dict), and only a few scalars per
prediction row are kept (~150 bytes/frame: the STAT_COLUMNS sums, E_hull, parity values);
force/stress parity components of the plotted subset come from a second streamed pass. Split
files are loaded one at a time and joined on the dedup row number. Outputs are byte-identical to
the whole-table implementation: every sum runs over the same values in the same (split-file) order.

Layout of the JSON (stable keys; `dvc metrics diff` flattens with dots):
`strategies.<s>.folds.<k>.<role>.<metric>`, `strategies.<s>.mean.<role>.<metric>`,
`strategies.<s>.std.<role>.<metric>`, `gap.<metric>.{ratio,ci_low,ci_high,...}`,
`contamination.{method,fraction,...}`, `throughput.*`, `coverage.*`, `notes.<metric>`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from xtalbench.core.errors import MissingInputError, XtalbenchError
from xtalbench.core.io import open_parquet
from xtalbench.core.project import (
    ROW_GROUP_SIZE,
    Paths,
    iter_batches,
    read_table,
    write_json,
)
from xtalbench.evaluate import metrics as M
from xtalbench.evaluate.contamination import contamination
from xtalbench.evaluate.gap import bootstrap_mae_ratio
from xtalbench.evaluate.hull import MP_FORMATION
from xtalbench.evaluate.thermo import (
    DEFAULT_STABILITY_THRESHOLD,
    MP_REFERENCES,
    MP2020FormationEnergy,
    ThermoError,
    stability_metrics,
)

ROLES = ("train", "val", "test")
STABILITY_KEYS = ("f1", "precision", "recall", "accuracy", "daf", "false_kill_rate", "prevalence")
STABILITY_COUNTS = ("tp", "fp", "fn", "tn")
# the headline keys use decomposition energies where the dataset has them (`stability_basis`);
# `shift_<key>` always uses the shift formula E_hull,MP + ΔE_form (exact only above the hull)
SHIFT_KEYS = tuple(f"shift_{k}" for k in STABILITY_KEYS)
SHIFT_COUNTS = tuple(f"shift_{k}" for k in STABILITY_COUNTS)
MEAN_KEYS = M.ERROR_METRICS + STABILITY_KEYS + SHIFT_KEYS
LABEL_COLUMNS = ("energy", "forces", "stress", "formation_energy_per_atom", "e_above_hull")
STRUCTURE_COLUMNS = ["numbers", "lattice", "positions", "pbc"]
MAX_LISTED_FAILURES = 200


@dataclass(frozen=True)
class ScoringConfig:
    """The `evaluate` params this module reads (all optional)."""

    stability_threshold: float = DEFAULT_STABILITY_THRESHOLD
    n_bootstrap: int = 1000
    seed: int = 0
    gap_strategies: tuple[str, str] = ("loco", "random")
    mp_references: str = str(MP_REFERENCES)
    force_cosine_min_norm: float = M.FORCE_COSINE_MIN_NORM
    plot_max_points: int = 10_000
    stability_tolerance: float = 1e-9  # eV/atom: stable ⇔ E ≤ threshold + tolerance (float noise, not physics)
    competing_phases: str | None = str(MP_FORMATION)  # None: shift formula only
    hull_scheme_policy: str = "correct"
    hull_max_disagreement: float = 0.05

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> ScoringConfig:
        cfg = (params or {}).get("evaluate") or {}
        defaults = cls()
        gap = cfg.get("gap_strategies") or defaults.gap_strategies
        if len(gap) != 2:
            raise ValueError(f"params evaluate.gap_strategies: expected [numerator, denominator], got {gap!r}")
        return cls(
            stability_threshold=float(cfg.get("stability_threshold", defaults.stability_threshold)),
            n_bootstrap=int(cfg.get("n_bootstrap", defaults.n_bootstrap)),
            seed=int(cfg.get("seed", defaults.seed)),
            gap_strategies=(str(gap[0]), str(gap[1])),
            mp_references=str(cfg.get("mp_references", defaults.mp_references)),
            force_cosine_min_norm=float(cfg.get("force_cosine_min_norm", defaults.force_cosine_min_norm)),
            plot_max_points=int(cfg.get("plot_max_points", defaults.plot_max_points)),
            stability_tolerance=float(cfg.get("stability_tolerance", defaults.stability_tolerance)),
            competing_phases=None if cfg.get("competing_phases", defaults.competing_phases) is None else str(cfg.get("competing_phases", defaults.competing_phases)),
            hull_scheme_policy=str(cfg.get("hull_scheme_policy", defaults.hull_scheme_policy)),
            hull_max_disagreement=float(cfg.get("hull_max_disagreement", defaults.hull_max_disagreement)),
        )


def resolve_energy_kind(spec: Any, dataset: str) -> str:
    kind = getattr(spec, "energy_kind", "total") or "total"
    if isinstance(kind, dict):
        kind = kind.get(dataset, kind.get("default", "total"))
    if kind not in ("total", "formation"):
        raise ValueError(f"model {getattr(spec, 'name', '?')!r}: field 'energy_kind': {kind!r} is not total or formation")
    return kind


# Models whose total energies already include the MP2020 corrections: CHGNet was trained on MPtrj
# `corrected_total_energy` (its fine-tuning example corrects DFT labels with MP2020 to match).
# Checked on 120 real mp20 materials: CHGNet v0.3.0 E_form MAE is 22 meV/atom without the
# correction and 258 meV/atom with it applied a second time (error vs correction: r = 0.995).
# MACE-MP models are trained on uncorrected MPtrj energies and get the correction.
MP2020_CORRECTED_KINDS = ("chgnet",)


def energies_mp2020_corrected(spec: Any) -> bool:
    """Whether the model's total energies already carry MP2020 corrections.

    `spec.mp2020_corrected`, else `spec.defaults["mp2020_corrected"]` (settable in the model
    YAML), else True for kinds in MP2020_CORRECTED_KINDS.
    """
    value = getattr(spec, "mp2020_corrected", None)
    if value is None:
        value = (getattr(spec, "defaults", None) or {}).get("mp2020_corrected")
    if value is None:
        value = getattr(spec, "kind", None) in MP2020_CORRECTED_KINDS
    return bool(value)


# --- streamed inputs ------------------------------------------------------------------------


def _columns_of(source: pa.Table | str | Path) -> list[str]:
    if isinstance(source, pa.Table):
        return list(source.column_names)
    return list(open_parquet(source).schema_arrow.names)  # InputError names an unreadable file


def prediction_batches(predictions: pa.Table | str | Path, columns: list[str], batch_rows: int = ROW_GROUP_SIZE) -> Iterator[pa.Table]:
    """The prediction rows in order, `batch_rows` at a time, only `columns` (those present)."""
    present = [c for c in columns if c in _columns_of(predictions)]
    if isinstance(predictions, pa.Table):
        table = predictions.select(present)
        for start in range(0, table.num_rows, batch_rows):
            yield table.slice(start, batch_rows)
        return
    for batch in iter_batches(predictions, columns=present, batch_size=batch_rows):
        yield pa.Table.from_batches([batch])


class FrameIndex:
    """frame_id → row of dedup.parquet, in ~2 bytes per id character + 8 per frame (no dict)."""

    def __init__(self, ids: np.ndarray):
        self.ids = ids  # fixed-width bytes, file order
        self.order = np.argsort(ids, kind="stable")
        self.sorted = ids[self.order]

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def encode(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        return np.array([("" if v is None else v).encode() for v in values.to_pylist()], dtype=bytes)

    def lookup(self, values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Rows of the ids (-1 where absent)."""
        query = self.encode(values)
        if not len(self.sorted):
            return np.full(len(query), -1, dtype=np.int64)
        pos = np.searchsorted(self.sorted, query)
        pos_c = np.minimum(pos, len(self.sorted) - 1)
        found = (pos < len(self.sorted)) & (self.sorted[pos_c] == query)
        return np.where(found, self.order[pos_c], -1).astype(np.int64)

    def frame_id(self, row: int) -> str:
        return self.ids[row].decode()


class TruthReader:
    """Random access to rows of a Parquet file, one row group in memory at a time."""

    def __init__(self, path: str | Path, batch_rows: int = ROW_GROUP_SIZE):
        self.path = Path(path)
        if not self.path.exists():
            raise MissingInputError(f"{self.path} does not exist: run the stage that writes it first (dvc repro)")
        self.file = open_parquet(self.path)  # InputError names a truncated or corrupted file
        self.columns = list(self.file.schema_arrow.names)
        self.batch_rows = batch_rows
        sizes = [self.file.metadata.row_group(i).num_rows for i in range(self.file.num_row_groups)]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.num_rows = int(self.starts[-1])
        self._cached: dict[tuple[str, ...], tuple[int, pa.Table]] = {}  # column set → its last row group

    def index(self) -> FrameIndex:
        """The frame_id index (one streamed pass over the frame_id column)."""
        chunks = [FrameIndex.encode(batch.column(0)) for batch in iter_batches(self.path, columns=["frame_id"], batch_size=self.batch_rows)]
        return FrameIndex(np.concatenate(chunks) if chunks else np.zeros(0, dtype="S1"))

    def has_values(self, column: str) -> bool:
        """Whether `column` exists with a non-null value (streamed; stops at the first one)."""
        if column not in self.columns:
            return False
        return any(batch.column(0).null_count < batch.num_rows for batch in iter_batches(self.path, columns=[column], batch_size=self.batch_rows))

    def clear(self) -> None:
        """Drop the cached row groups."""
        self._cached.clear()

    def _group(self, g: int, columns: tuple[str, ...]) -> pa.Table:
        if self._cached.get(columns, (None,))[0] != g:
            self._cached.pop(columns, None)
            self._cached[columns] = (g, self.file.read_row_group(g, columns=list(columns)))
        return self._cached[columns][1]

    def take(self, rows: np.ndarray, columns: list[str]) -> pa.Table:
        """Rows (any order, repeats allowed) with `columns` (those present)."""
        cols = tuple(c for c in columns if c in self.columns)
        rows = np.asarray(rows, dtype=np.int64)
        groups = np.searchsorted(self.starts, rows, side="right") - 1
        parts, positions = [], []
        for g in np.unique(groups):
            sel = np.flatnonzero(groups == g)
            parts.append(self._group(int(g), cols).take(pa.array(rows[sel] - self.starts[g])))
            positions.append(sel)
        if not parts:
            return self.file.schema_arrow.empty_table().select(list(cols))
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        order = np.concatenate(positions)
        if len(parts) > 1 or not np.array_equal(order, np.arange(len(order))):
            inverse = np.empty_like(order)
            inverse[order] = np.arange(len(order))
            table = table.take(pa.array(inverse))
        return table


class _Lazy(Sequence):
    """A read-only sequence computing item i on access (parity points without 1M-item lists)."""

    def __init__(self, n: int, get: Callable[[int], Any]):
        self.n, self.get = n, get

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):  # type: ignore[override]
        return self.get(int(i))


# --- per-row errors -----------------------------------------------------------------------


def _floats(table: pa.Table, column: str, rows: np.ndarray | None = None) -> np.ndarray:
    if column not in table.column_names:
        n = table.num_rows if rows is None else len(rows)
        return np.full(n, np.nan)
    values = table.column(column).cast(pa.float64()).fill_null(np.nan).to_numpy()
    return values if rows is None else values[rows]


def _lists(table: pa.Table, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A list<float> column as (flat values, offsets, valid mask)."""
    if column not in table.column_names:
        n = table.num_rows
        return np.zeros(0), np.zeros(n + 1, dtype=np.int64), np.zeros(n, dtype=bool)
    col = table.column(column).combine_chunks()
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = pc.list_flatten(col).cast(pa.float64()).to_numpy(zero_copy_only=False)
    return flat, offsets, valid


def _slice(lists: tuple[np.ndarray, np.ndarray, np.ndarray], i: int) -> np.ndarray | None:
    flat, offsets, valid = lists
    return flat[offsets[i] : offsets[i + 1]] if valid[i] else None


@dataclass
class Scored:
    """Compact per-prediction-row results (a few numbers per frame) of `frame_errors`."""

    frame: pd.DataFrame  # `_row` (dedup row), p_strategy, p_fold, STAT_COLUMNS, e_form_err
    coverage: dict[str, Any]
    points: dict[str, Mapping[str, Sequence]]
    index: FrameIndex
    has_truth: dict[str, bool]
    has_pred: dict[str, bool]


def frame_errors(
    truth: TruthReader,
    predictions: pa.Table | str | Path,
    energy_kind: str,
    cfg: ScoringConfig,
    source: str = "dedup.parquet",
    apply_mp2020: bool = True,
    batch_rows: int = ROW_GROUP_SIZE,
    index: FrameIndex | None = None,
) -> Scored:
    """Per prediction row: error sums, E_form/E_hull (pred and MP), and parity points.

    Streams the predictions in batches of `batch_rows` and reads, per batch, only the dedup rows
    it needs; keeps only per-row scalars. Bad input raises ValueError naming the record and field.
    """
    pred_columns = _columns_of(predictions)
    if "frame_id" not in pred_columns:
        raise ValueError("predictions: field 'frame_id' missing")
    frame_index = index or truth.index()
    n_truth = len(frame_index)
    wanted_cols = ["frame_id", "nsites", "energy", "forces", "stress", "strategy", "fold"]
    truth_cols = ["nsites", "energy", "formation_energy_per_atom", "e_above_hull", "forces", "stress"]
    structure_cols = ["frame_id", *STRUCTURE_COLUMNS]

    runs: dict[tuple, int] = {}  # (strategy, fold) → run code, in order of appearance
    seen: dict[int, np.ndarray] = {}
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("row", "run", "nsites", "e_pred", "e_true", "ef_pred", "ef_true", "f_ok", "s_ok", *M.STAT_COLUMNS)}
    failures: dict[str, str] = {}
    uncorrect_failures: dict[str, str] = {}
    uncorrector = None
    pred_nulls = {c: 0 for c in ("energy", "forces", "stress")}
    seen_label = dict.fromkeys(LABEL_COLUMNS, False)
    n_pred = 0
    thermo = None
    # dedup row → (MP2020 correction, composition) or the failure: a frame predicted by several
    # folds (fold-trained models) is corrected once (BVAnalyzer + oxide_type, ~20-40 ms a structure)
    correction_cache: dict[int, tuple[float, dict[str, float]] | str] = {}
    progress = tqdm(desc="errors", unit="frame", leave=False, disable=None)
    for batch in prediction_batches(predictions, wanted_cols, batch_rows):
        n = batch.num_rows
        for c in pred_nulls:
            pred_nulls[c] += batch.column(c).null_count if c in batch.column_names else n
        p_ids = batch.column("frame_id")
        rows = frame_index.lookup(p_ids)
        strategy = batch.column("strategy").to_pylist() if "strategy" in batch.column_names else [None] * n
        fold = batch.column("fold").to_pylist() if "fold" in batch.column_names else [None] * n
        codes = np.array([runs.setdefault(key, len(runs)) for key in zip(strategy, fold, strict=True)], dtype=np.int32)
        bad = np.zeros(n, dtype=bool)
        for code in np.unique(codes):
            sel = np.flatnonzero((codes == code) & (rows >= 0))
            mark = seen.setdefault(int(code), np.zeros(n_truth, dtype=bool))
            js = rows[sel]
            dup = mark[js].copy()
            _, first = np.unique(js, return_index=True)
            again = np.ones(len(js), dtype=bool)
            again[first] = False
            bad[sel[dup | again]] = True
            mark[js] = True
        missing = np.flatnonzero((rows < 0) | bad)
        if len(missing):
            i = int(missing[0])
            fid = p_ids[i].as_py()
            if rows[i] < 0:
                raise ValueError(f"predictions: record {fid!r}, field 'frame_id': not in {source}")
            raise ValueError(f"predictions: record {fid!r}, field 'frame_id': predicted twice for strategy {strategy[i]!r} fold {fold[i]!r}")
        t = truth.take(rows, truth_cols)
        for c in LABEL_COLUMNS:
            seen_label[c] = seen_label[c] or (c in t.column_names and t.column(c).null_count < n)
        nsites = t.column("nsites").to_numpy().astype(np.int64)
        if "nsites" in batch.column_names:
            p_n = batch.column("nsites").to_numpy(zero_copy_only=False)
            wrong = np.flatnonzero(p_n != nsites)
            if len(wrong):
                i = int(wrong[0])
                raise ValueError(f"predictions: record {p_ids[i].as_py()!r}, field 'nsites': {p_n[i]} but the frame has {nsites[i]} atoms")
        e_pred = _floats(batch, "energy")
        e_true = _floats(t, "energy") if energy_kind == "total" else np.full(n, np.nan)
        e_cmp = e_pred  # what is compared with the raw DFT energy
        if not apply_mp2020 and energy_kind == "total":
            uncorrector = uncorrector or MP2020FormationEnergy(references=cfg.mp_references, compatibility=True)
            e_cmp = _without_mp2020(uncorrector, e_pred, e_true, rows, truth, structure_cols, p_ids, uncorrect_failures)
        ef_true = _floats(t, "formation_energy_per_atom")
        ef_pred = np.full(n, np.nan)
        wanted = np.isfinite(ef_true) & np.isfinite(e_pred)
        if wanted.any() and energy_kind == "formation":
            ef_pred[wanted] = e_pred[wanted] / nsites[wanted]
        elif wanted.any():
            if thermo is None:
                thermo = MP2020FormationEnergy(references=cfg.mp_references, compatibility=apply_mp2020).fit()
            idx = np.flatnonzero(wanted)
            needed = np.unique(rows[idx])
            todo = needed[[int(j) not in correction_cache for j in needed]]
            structures = truth.take(todo, structure_cols) if len(todo) else None
            _formation_energies(thermo, structures, todo, rows, idx, e_pred, ef_pred, p_ids, failures, correction_cache)
        f_pred, f_true = _lists(batch, "forces"), _lists(t, "forces")
        s_pred, s_true = _lists(batch, "stress"), _lists(t, "stress")
        stats = {c: np.zeros(n) for c in M.STAT_COLUMNS}
        for i in range(n):
            one = M.row_stats(
                nsites=int(nsites[i]),
                energy_pred=e_cmp[i],
                energy_true=e_true[i],
                forces_pred=_slice(f_pred, i),
                forces_true=_slice(f_true, i),
                stress_pred=_slice(s_pred, i),
                stress_true=_slice(s_true, i),
                e_form_pred=ef_pred[i],
                e_form_true=ef_true[i],
                record=str(p_ids[i].as_py()),
                min_norm=cfg.force_cosine_min_norm,
            )
            for c, v in one.items():
                stats[c][i] = v
        for key, value in (("row", rows), ("run", codes), ("nsites", nsites), ("e_pred", e_cmp), ("e_true", e_true), ("ef_pred", ef_pred),
                           ("ef_true", ef_true), ("f_ok", f_pred[2] & f_true[2]), ("s_ok", s_pred[2] & s_true[2])):  # fmt: skip
            parts[key].append(value)
        for c in M.STAT_COLUMNS:
            parts[c].append(stats[c])
        n_pred += n
        progress.update(n)
    progress.close()

    truth.clear()
    cat = {k: np.concatenate(parts.pop(k)) if parts[k] else np.zeros(0) for k in list(parts)}
    rows, codes, nsites = cat["row"].astype(np.int64), cat["run"].astype(np.int32), cat["nsites"].astype(np.int64)
    ef_pred, ef_true = cat["ef_pred"], cat["ef_true"]
    run_keys = list(runs)
    run_strategy = np.array([k[0] for k in run_keys] or [None], dtype=object)
    run_fold = [k[1] for k in run_keys]
    frame = pd.DataFrame(
        {
            "_row": rows,
            "p_strategy": run_strategy[codes] if len(codes) else np.zeros(0, dtype=object),
            "p_fold": pd.array(np.array(run_fold or [None], dtype=object)[codes] if len(codes) else [], dtype="Int64"),
            **{c: cat.pop(c).astype(np.float64, copy=False) for c in M.STAT_COLUMNS},
            "e_form_err": ef_pred - ef_true,  # NaN where either is missing
        }
    )
    coverage = {
        "n_predictions": n_pred,
        "n_truth_frames": n_truth,
        "n_without_energy": int(np.sum(~np.isfinite(cat["e_pred"]))),
        "e_form": {
            "n_labelled": int(np.sum(np.isfinite(ef_true))),
            "n_computed": int(np.sum(np.isfinite(ef_pred))),
            "n_failed": len(failures),
            "failures": dict(sorted(failures.items())[:MAX_LISTED_FAILURES]),
        },
    }
    if uncorrector is not None:  # MP2020-corrected model energies compared with raw DFT energies
        coverage["mp2020_removed"] = {
            "n_failed": len(uncorrect_failures),
            "failures": dict(sorted(uncorrect_failures.items())[:MAX_LISTED_FAILURES]),
        }
    keys = _RowKeys(frame_index, rows, codes, run_keys)
    points = _parity_points(keys, nsites, cat["e_pred"], cat["e_true"], ef_pred, ef_true, cat["f_ok"].astype(bool), cat["s_ok"].astype(bool),
                            truth, predictions, batch_rows, cfg)  # fmt: skip
    # a label column counts as present if any dedup row has it (not only the predicted rows)
    has_truth = {c: seen_label[c] or truth.has_values(c) for c in LABEL_COLUMNS}
    has_pred = {c: c in pred_columns and pred_nulls[c] < n_pred for c in pred_nulls}
    return Scored(frame, coverage, points, frame_index, has_truth, has_pred)


@dataclass
class _RowKeys:
    """frame_id, strategy and fold of prediction row i (from the compact per-row codes)."""

    index: FrameIndex
    rows: np.ndarray
    codes: np.ndarray
    runs: list[tuple]

    def frame_id(self, i: int) -> str:
        return self.index.frame_id(int(self.rows[i]))

    def strategy(self, i: int) -> str | None:
        return self.runs[self.codes[i]][0]

    def fold(self, i: int) -> int | None:
        return self.runs[self.codes[i]][1]


def _without_mp2020(uncorrector, e_pred: np.ndarray, e_true: np.ndarray, rows: np.ndarray, truth: TruthReader, structure_cols: list[str],
                    p_ids: pa.ChunkedArray, failures: dict[str, str]) -> np.ndarray:  # fmt: skip
    """Predicted energies minus their MP2020 correction, for rows with a DFT energy to compare.

    A model trained on MPtrj's corrected energies (CHGNet) predicts E_DFT + correction; the frames
    table holds raw DFT energies, so the correction comes off before the error is taken (on MP
    task frames of oxides it is ~0.4 eV/atom). Rows whose correction cannot be computed get NaN.
    """
    from xtalbench.core.schema import to_structure

    out = e_pred.copy()
    idx = np.flatnonzero(np.isfinite(e_true) & np.isfinite(e_pred))
    if not len(idx):
        return out
    needed = np.unique(rows[idx])
    corrections: dict[int, float | str] = {}
    for j, row in zip(needed, truth.take(needed, structure_cols).to_pylist(), strict=True):
        try:
            corrections[int(j)] = uncorrector.correction(to_structure(row), row["frame_id"])
        except ThermoError as error:
            corrections[int(j)] = error.reason
    for i in idx:
        got = corrections[int(rows[i])]
        if isinstance(got, str):
            failures[str(p_ids[int(i)].as_py())] = got
            out[i] = np.nan
        else:
            out[i] -= got
    return out


CORRECTION_CACHE_MAX = 500_000  # rows whose correction is remembered across batches (~100 bytes each)


def _formation_energies(thermo, structures: pa.Table | None, needed: np.ndarray, rows: np.ndarray, idx: np.ndarray, e_pred: np.ndarray,
                        ef_pred: np.ndarray, p_ids: pa.ChunkedArray, failures: dict[str, str],
                        cache: dict[int, tuple[float, dict[str, float]] | str] | None = None) -> None:  # fmt: skip
    """Predicted E_form per atom of rows `idx` of a batch (in place), MP2020-corrected.

    `structures`: the dedup rows `needed` (those not in `cache`); `cache`: dedup row →
    (correction, composition) or the failure reason, kept across batches (up to
    CORRECTION_CACHE_MAX rows)."""
    from xtalbench.core.schema import to_structure
    from xtalbench.evaluate.thermo import formation_energy_per_atom

    fresh: dict[int, tuple[float, dict[str, float]] | str] = {}
    for j, row in zip(needed, structures.to_pylist() if structures is not None else [], strict=True):
        structure = to_structure(row)
        try:
            fresh[int(j)] = (thermo.correction(structure, row["frame_id"]), {str(el): float(n) for el, n in structure.composition.items()})
        except ThermoError as error:
            fresh[int(j)] = error.reason
    known = cache if cache is not None else {}
    for i in idx:
        fid = str(p_ids[int(i)].as_py())
        row = int(rows[i])
        got = fresh[row] if row in fresh else known[row]
        if isinstance(got, str):
            failures[fid] = got
            continue
        correction, composition = got
        try:
            ef_pred[i] = formation_energy_per_atom(float(e_pred[i]) + correction, composition, thermo._refs(), fid)
        except ThermoError as error:
            failures[fid] = error.reason
    if cache is not None and len(cache) + len(fresh) <= CORRECTION_CACHE_MAX:
        cache.update(fresh)


def _parity_points(keys: _RowKeys, nsites, e_pred, e_true, ef_pred, ef_true, f_ok, s_ok, truth: TruthReader, predictions, batch_rows: int, cfg: ScoringConfig):
    """Energy/E_form points as lazy columns over the per-row arrays; force/stress components of a
    deterministic subset of frames, read in a second streamed pass."""
    from xtalbench.evaluate.plots import subsample

    def collect(mask: np.ndarray, truth_v: np.ndarray, pred_v: np.ndarray) -> dict[str, Sequence]:
        idx = np.flatnonzero(mask)
        return {
            "frame_id": _Lazy(len(idx), lambda k: keys.frame_id(idx[k])),
            "strategy": _Lazy(len(idx), lambda k: keys.strategy(idx[k])),
            "fold": _Lazy(len(idx), lambda k: keys.fold(idx[k])),
            "truth": truth_v[idx],
            "prediction": pred_v[idx],
        }

    points: dict[str, Mapping[str, Sequence]] = {}
    ok = np.isfinite(e_pred) & np.isfinite(e_true)
    if ok.any():
        points["energy"] = collect(ok, e_true / nsites, e_pred / nsites)
    ok = np.isfinite(ef_pred) & np.isfinite(ef_true)
    if ok.any():
        points["e_form"] = collect(ok, ef_true, ef_pred)
    from ase.units import GPa

    chosen: dict[str, np.ndarray] = {}
    for quantity, valid in (("forces", f_ok), ("stress", s_ok)):
        have = np.flatnonzero(valid)
        if len(have):
            # a deterministic subset of frames, then all their components (subsampled again on plotting)
            chosen[quantity] = have[subsample(len(have), max(1, cfg.plot_max_points // 10), cfg.seed)]
    if not chosen:
        return points
    out = {q: {"frame_id": [], "strategy": [], "fold": [], "truth": [], "prediction": []} for q in ("forces", "stress") if q in chosen}
    start = 0
    for batch in prediction_batches(predictions, list(chosen), batch_rows):
        stop = start + batch.num_rows
        for quantity, scale in (("forces", 1.0), ("stress", 1.0 / GPa)):
            if quantity not in chosen:
                continue
            here = chosen[quantity][(chosen[quantity] >= start) & (chosen[quantity] < stop)]
            if not len(here):
                continue
            pred_lists = _lists(batch.take(pa.array(here - start)), quantity)
            true_lists = _lists(truth.take(keys.rows[here], [quantity]), quantity)
            o = out[quantity]
            for k, i in enumerate(here):
                p, t = _slice(pred_lists, k), _slice(true_lists, k)
                o["frame_id"] += [keys.frame_id(i)] * len(p)
                o["strategy"] += [keys.strategy(i)] * len(p)
                o["fold"] += [keys.fold(i)] * len(p)
                o["truth"] += (t * scale).tolist()
                o["prediction"] += (p * scale).tolist()
        start = stop
    points.update(out)
    return points


# --- joins with the splits ----------------------------------------------------------------


def split_files(paths: Paths) -> dict[str, Path]:
    """strategy → `splits/<dataset>/<strategy>.parquet`, sorted by strategy name."""
    files = sorted(paths.splits_dir.glob("*.parquet")) if paths.splits_dir.exists() else []
    if not files:
        raise XtalbenchError(f"no split files in {paths.splits_dir}: run the split stage first (dvc repro)")
    return {path.stem: path for path in files}


def load_split(path: Path, index: FrameIndex) -> pd.DataFrame:
    """One split file, validated, with `_row` (its frame's dedup row, -1 if absent)."""
    table = read_table(path, columns=["frame_id", "material_id", "fold", "role", "cluster"])
    roles = table.column("role")
    bad = pc.invert(pc.fill_null(pc.is_in(roles, value_set=pa.array(ROLES)), False))
    if pc.any(bad).as_py():
        i = pc.index(bad, True).as_py()
        raise ValueError(f"{path}: record {table.column('frame_id')[i].as_py()!r}, field 'role': {roles[i].as_py()!r} is not one of {', '.join(ROLES)}")
    rows = np.concatenate([index.lookup(chunk) for chunk in table.column("frame_id").chunks]) if table.num_rows else np.zeros(0, dtype=np.int64)
    df = table.drop_columns(["frame_id"]).to_pandas()
    del table
    df["fold"] = df["fold"].astype("int64")
    df["_row"] = rows
    return df


def join_split(strategy: str, split: pd.DataFrame, scored: pd.DataFrame, per_fold: bool, index: FrameIndex) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Split rows with their prediction errors (`scored` column True where predicted)."""
    scored = scored.assign(scored=True)
    if per_fold:
        preds = scored[scored["p_strategy"] == strategy]
        if preds.empty:
            return split.iloc[0:0].assign(scored=False), {"evaluated": False}
        folds = sorted(int(f) for f in preds["p_fold"].dropna().unique())
        if preds["p_fold"].isna().any():
            fid = index.frame_id(int(preds[preds["p_fold"].isna()]["_row"].iloc[0]))
            raise ValueError(f"predictions: record {fid!r}, field 'fold': null for a fold-trained model (strategy {strategy!r})")
        sub = split[split["fold"].isin(folds)]
        preds = preds.assign(fold=preds["p_fold"].astype("int64"))
        merged = sub.merge(preds.drop(columns=["p_strategy", "p_fold"]), on=["_row", "fold"], how="left")
        known = preds[["_row", "fold"]].merge(sub[["_row", "fold"]].drop_duplicates(), on=["_row", "fold"], how="left", indicator=True)
        stray = np.flatnonzero((known["_merge"] == "left_only").to_numpy())
        if len(stray):
            row, fold = known.iloc[int(stray[0])][["_row", "fold"]]
            raise ValueError(f"predictions: record {index.frame_id(int(row))!r}, field 'fold': fold {int(fold)} of strategy {strategy!r} has no such frame")
        expected = merged["role"].isin(("val", "test"))
    else:
        merged = split.merge(scored.drop(columns=["p_strategy", "p_fold"]), on="_row", how="left")
        folds = sorted(int(f) for f in split["fold"].unique())
        expected = np.ones(len(merged), dtype=bool)
    merged["scored"] = merged["scored"].fillna(False).astype(bool)
    missing = expected & ~merged["scored"].to_numpy()
    return merged, {"evaluated": True, "folds": folds, "n_missing_predictions": int(missing.sum())}


@dataclass
class StabilityTruth:
    """Per dedup row: the label E_hull and decomposition energy (eV/atom, NaN where unlabelled)."""

    e_hull: np.ndarray
    e_decomp: np.ndarray | None  # None: no competing phases, shift formula only
    basis: np.ndarray | None  # xtalbench.evaluate.hull.BASIS_* per row
    report: dict[str, Any]

    @property
    def method(self) -> str:
        return "decomposition_energy" if self.e_decomp is not None else "shift"


def _formula(numbers: Sequence[int]) -> str:
    from pymatgen.core.periodic_table import Element

    values, counts = np.unique(np.asarray(numbers, dtype=np.int64), return_counts=True)
    return " ".join(f"{Element.from_Z(int(z)).symbol}{int(n)}" for z, n in zip(values, counts, strict=True))


def stability_truth(truth: TruthReader, cfg: ScoringConfig) -> StabilityTruth:
    """Label stability of every dedup row: E_hull (shift formula) and, with competing phases,
    decomposition energies against the hull of all other phases (`xtalbench.evaluate.hull`)."""
    from xtalbench.evaluate import hull

    n = truth.num_rows
    e_hull, e_form = np.full(n, np.nan), np.full(n, np.nan)
    ids: list[str] = []
    formulas: list[str] = []
    rows: list[int] = []
    start = 0
    columns = [c for c in ("frame_id", "material_id", "numbers", "formation_energy_per_atom", "e_above_hull") if c in truth.columns]
    if "e_above_hull" not in columns or "formation_energy_per_atom" not in columns:
        return StabilityTruth(e_hull, None, None, {"method": "shift", "note": "no e_above_hull / formation_energy_per_atom labels"})
    for batch in iter_batches(truth.path, columns=columns, batch_size=truth.batch_rows):
        table = pa.Table.from_batches([batch])
        stop = start + table.num_rows
        e_hull[start:stop] = _floats(table, "e_above_hull")
        e_form[start:stop] = _floats(table, "formation_energy_per_atom")
        have = np.flatnonzero(np.isfinite(e_hull[start:stop]) & np.isfinite(e_form[start:stop]))
        if len(have):
            mids = table.column("material_id" if "material_id" in columns else "frame_id").to_pylist()
            fids = table.column("frame_id").to_pylist()
            numbers = table.column("numbers").take(pa.array(have)).to_pylist()
            for k, i in enumerate(have):
                ids.append(str(mids[i] if mids[i] is not None else fids[i]))
                formulas.append(_formula(numbers[k]))
                rows.append(start + int(i))
        start = stop
    report: dict[str, Any] = {"n_labelled": len(rows)}
    path = cfg.competing_phases
    if path is None or not rows:
        report.update(method="shift", note="no competing phases configured (evaluate.competing_phases: null)" if path is None else "no labelled rows")
        return StabilityTruth(e_hull, None, None, report)
    if not Path(path).exists():
        report.update(method="shift", note=f"competing phases {path} not found: shift formula only (exact above the hull, the sign of the error on it)")
        return StabilityTruth(e_hull, None, None, report)
    idx = np.array(rows, dtype=np.int64)
    labels = pd.DataFrame({"material_id": ids, "formula": formulas, "e_form": e_form[idx]})
    phases, phase_report = hull.build_competing_phases(labels, path, cfg.hull_scheme_policy, cfg.hull_max_disagreement)
    e_d, basis_l, counts = hull.decomposition_energies(phases, ids, formulas, e_form[idx], e_hull[idx], progress=True)
    e_decomp, basis = np.full(n, np.nan), np.zeros(n, dtype=np.int8)
    e_decomp[idx], basis[idx] = e_d, basis_l
    report.update(method="decomposition_energy", competing_phases=phase_report, **counts)
    return StabilityTruth(e_hull, e_decomp, basis, report)


def role_stability(rows: pd.DataFrame, truth: StabilityTruth, threshold: float, tolerance: float) -> dict[str, Any]:
    """Stability scores of the rows expected in one strategy × fold × role (predicted or not).

    Prediction = label + the row's E_form error (`e_form_err`); rows without one (no prediction,
    or E_form not computable) count as predicted unstable (Matbench Discovery). Headline keys use
    decomposition energies when `truth` has them, `shift_*` keys the shift formula.
    """
    from xtalbench.evaluate.hull import BASIS_ABOVE_HULL, BASIS_FALLBACK, BASIS_MARGIN

    r = rows["_row"].to_numpy(dtype=np.int64)
    keep = r >= 0
    r = r[keep]
    err = rows["e_form_err"].to_numpy(dtype=np.float64, na_value=np.nan)[keep] if "e_form_err" in rows else np.full(len(r), np.nan)
    scored = rows["scored"].to_numpy(dtype=bool)[keep]
    err = np.where(scored, err, np.nan)
    out: dict[str, Any] = {}
    shift = stability_metrics(truth.e_hull[r], truth.e_hull[r] + err, threshold, tolerance)
    out.update({f"shift_{k}": shift[k] for k in STABILITY_KEYS + STABILITY_COUNTS})
    if truth.e_decomp is not None:
        main = stability_metrics(truth.e_decomp[r], truth.e_decomp[r] + err, threshold, tolerance)
        b = truth.basis[r]
        out.update(n_stability_above_hull=int(np.sum(b == BASIS_ABOVE_HULL)), n_stability_on_hull_margin=int(np.sum(b == BASIS_MARGIN)),
                   n_stability_on_hull_inconsistent=int(np.sum(b == BASIS_FALLBACK)))  # fmt: skip
    else:
        main = shift
    out.update({k: main[k] for k in STABILITY_KEYS + STABILITY_COUNTS})
    out["stability_basis"] = truth.method
    out["n_stability_labelled"] = main["tp"] + main["fp"] + main["fn"] + main["tn"]
    out["n_stability_missing_predictions"] = main["n_missing"]
    return out


def role_metrics(group: pd.DataFrame) -> dict[str, Any]:
    """Metrics of one strategy × fold × role set (only rows with a prediction); stability: `role_stability`."""
    out: dict[str, Any] = {"n": len(group), "n_materials": int(group["material_id"].nunique())}
    out.update(M.aggregate({c: group[c].to_numpy() for c in M.STAT_COLUMNS}))
    clusters = group.dropna(subset=["cluster"]) if "cluster" in group else group.iloc[0:0]
    if len(clusters):
        sizes = clusters.groupby(clusters["cluster"].astype("int64"))["material_id"].nunique()
        out["cluster_sizes"] = {str(int(c)): int(n) for c, n in sizes.items()}
    return out


def fold_summary(folds: dict[str, dict[str, dict[str, Any]]]) -> tuple[dict, dict]:
    """Mean and std (ddof 0) over folds of each role's metrics; `n_folds` per role."""
    mean: dict[str, dict[str, Any]] = {}
    std: dict[str, dict[str, Any]] = {}
    for role in ROLES:
        present = [f[role] for f in folds.values() if role in f]
        if not present:
            continue
        mean[role] = {"n_folds": len(present)}
        std[role] = {}
        for key in MEAN_KEYS:
            values = [r[key] for r in present if r.get(key) is not None]
            mean[role][key] = float(np.mean(values)) if values else None
            std[role][key] = float(np.std(values)) if values else None
    return mean, std


def material_sums(test_rows: pd.DataFrame) -> pd.DataFrame:
    """Per-material Σ|err| and counts of the headline metrics (the bootstrap's groups)."""
    columns = sorted({c for abs_c, cnt_c, _ in M.HEADLINE.values() for c in (abs_c, cnt_c)})
    return test_rows.groupby("material_id", sort=True)[columns].sum()


def gap_report(sums: dict[str, pd.DataFrame | None], cfg: ScoringConfig) -> dict[str, Any]:
    """LOCO/random MAE ratio with a material-bootstrap CI; `sums`: strategy → `material_sums` of
    its scored test rows (None when the strategy was not scored)."""
    num, den = cfg.gap_strategies
    out: dict[str, Any] = {"numerator": num, "denominator": den}
    missing = [s for s in (num, den) if sums.get(s) is None]
    if missing:
        out["note"] = f"no scored {' or '.join(missing)} split: gap not computed"
        return out
    for metric, (abs_c, cnt_c, scale) in M.HEADLINE.items():
        result = bootstrap_mae_ratio(
            sums[num][abs_c].to_numpy() * scale,
            sums[num][cnt_c].to_numpy(),
            sums[den][abs_c].to_numpy() * scale,
            sums[den][cnt_c].to_numpy(),
            n_bootstrap=cfg.n_bootstrap,
            seed=cfg.seed,
        )
        out[metric] = result
    return out


# --- notes ----------------------------------------------------------------------------------


def label_notes(has_truth: Mapping[str, bool], has_pred: Mapping[str, bool], energy_kind: str, coverage: dict[str, Any]) -> dict[str, str]:
    """Why a metric is null everywhere (labels absent, model output absent). `has_*`: column →
    present with at least one non-null value."""
    notes: dict[str, str] = {}
    reasons = {
        "energy": None
        if energy_kind == "total"
        else "the model predicts formation energies (energy_kind: formation): scored as e_form only",
        "forces": None,
        "stress": None,
        "formation_energy_per_atom": None,
    }
    pred_column = {"energy": "energy", "forces": "forces", "stress": "stress", "formation_energy_per_atom": "energy"}
    for label, metric_names in M.METRIC_LABELS.items():
        reason = reasons[label]
        if reason is None and not has_truth.get(label, False):
            reason = f"no DFT `{label}` labels in the dataset"
        if reason is None and not has_pred.get(pred_column[label], False):
            reason = f"the model gave no `{pred_column[label]}`"
        if reason is None and label == "formation_energy_per_atom" and coverage["e_form"]["n_computed"] == 0:
            reason = "no predicted formation energy could be computed (see coverage.e_form.failures)"
        if reason:
            notes.update(dict.fromkeys(metric_names, reason))
    if not has_truth.get("e_above_hull", False):
        notes.update(dict.fromkeys(STABILITY_KEYS + SHIFT_KEYS, "no `e_above_hull` labels in the dataset"))
    elif "e_form_mae_meV_per_atom" in notes:
        notes.update(dict.fromkeys(STABILITY_KEYS + SHIFT_KEYS, "no predicted formation energies: " + notes["e_form_mae_meV_per_atom"]))
    return notes


# --- entry point ------------------------------------------------------------------------------


def _strategy_column(predictions: pa.Table | str | Path, batch_rows: int) -> tuple[int, int, set[str], str | None]:
    """(rows, rows with a strategy, the strategies, frame_id of the first row without one)."""
    n = n_strategy = 0
    names: set[str] = set()
    first_null = None
    has = "strategy" in _columns_of(predictions)
    for batch in prediction_batches(predictions, ["frame_id", "strategy"], batch_rows):
        if has:
            col = batch.column("strategy")
            n_strategy += batch.num_rows - col.null_count
            names.update(s for s in pc.unique(col).to_pylist() if s is not None)
            if first_null is None and col.null_count:
                first_null = batch.column("frame_id")[pc.index(pc.is_null(col), True).as_py()].as_py()
        elif first_null is None and batch.num_rows:
            first_null = batch.column("frame_id")[0].as_py()
        n += batch.num_rows
    return n, n_strategy, names, first_null


def score_model(
    dataset: str,
    spec: Any,
    predictions: pa.Table | str | Path,
    params: dict,
    throughput: dict,
    root: str | Path = ".",
    batch_rows: int = ROW_GROUP_SIZE,
) -> dict:
    """Score one model on every split of a dataset; write its metrics JSON and parity plots.

    `predictions`: a table or (bounded memory) a Parquet path, read `batch_rows` rows at a time.
    `spec` needs `name`, `kind`, `energy_kind`, `training_set` (duck-typed). Fold-trained models
    (kind `mace-trained`, or predictions carrying a strategy) are joined on strategy+fold+frame.
    """
    cfg = ScoringConfig.from_params(params)
    paths = Paths(dataset, Path(root))
    name = str(getattr(spec, "name"))
    kind = getattr(spec, "kind", None)
    energy_kind = resolve_energy_kind(spec, dataset)
    n_rows, n_strategy, strategy_names, first_null = _strategy_column(predictions, batch_rows)
    per_fold = n_strategy > 0
    if (kind == "mace-trained" or per_fold) and n_strategy < n_rows:
        raise ValueError(f"predictions: record {first_null if first_null is not None else '?'!r}, field 'strategy': null, but a fold-trained model's rows need strategy and fold")

    truth = TruthReader(paths.dedup, batch_rows)
    splits = split_files(paths)
    if per_fold:
        unknown = sorted(strategy_names - set(splits))
        if unknown:
            raise ValueError(f"predictions: field 'strategy': {unknown[0]!r} has no split file in {paths.splits_dir}")

    corrected = energies_mp2020_corrected(spec)
    res = frame_errors(truth, predictions, energy_kind, cfg, source=str(paths.dedup), apply_mp2020=not corrected, batch_rows=batch_rows)
    scored, coverage, index = res.frame, res.coverage, res.index
    stab = stability_truth(truth, cfg)

    strategies: dict[str, Any] = {}
    gap_sums: dict[str, pd.DataFrame | None] = {}
    fold_sets: dict[tuple[str, int], tuple[set[str], set[str]]] = {}
    coverage["strategies"] = {}
    for strategy, path in splits.items():  # one split in memory at a time
        split = load_split(path, index)
        merged, info = join_split(strategy, split, scored, per_fold, index)
        coverage["strategies"][strategy] = info
        if not info["evaluated"]:
            continue
        if strategy in cfg.gap_strategies and not merged.empty:
            gap_sums[strategy] = material_sums(merged[merged["scored"] & (merged["role"] == "test")])
        folds: dict[str, dict[str, Any]] = {}
        for fold in info["folds"]:
            rows = split[split["fold"] == fold]
            fold_sets[(strategy, fold)] = (
                set(rows.loc[rows["role"] == "test", "material_id"]),
                set(rows.loc[rows["role"] == "train", "material_id"]),
            )
            in_fold = merged[merged["fold"] == fold]
            expected = in_fold[in_fold["role"].isin(("val", "test"))] if per_fold else in_fold
            got = in_fold[in_fold["scored"]]
            folds[str(fold)] = {}
            for role, g in got.groupby("role", sort=True):
                folds[str(fold)][role] = role_metrics(g)
                folds[str(fold)][role].update(role_stability(expected[expected["role"] == role], stab, cfg.stability_threshold, cfg.stability_tolerance))
        mean, std = fold_summary(folds)
        strategies[strategy] = {"folds": folds, "mean": mean, "std": std, "n_folds": len(folds)}
        del split, merged

    contam = contamination(spec, fold_sets)
    for strategy, block in contam["strategies"].items():
        for fold, entry in block["folds"].items():
            test = strategies[strategy]["folds"].get(fold, {}).get("test")
            if test is not None:
                test["contamination_fraction"] = entry["fraction"]
    for strategy, block in strategies.items():
        fractions = [f["test"]["contamination_fraction"] for f in block["folds"].values() if f.get("test", {}).get("contamination_fraction") is not None]
        if "test" in block["mean"]:
            block["mean"]["test"]["contamination_fraction"] = float(np.mean(fractions)) if fractions else None

    result = {
        "model": name,
        "dataset": dataset,
        "kind": kind,
        "energy_kind": energy_kind,
        "e_form_method": "energy / nsites"
        if energy_kind == "formation"
        else ("model energies already MP2020-corrected; MP elemental references" if corrected else "MP2020 correction (MPRelaxSet parameters) + MP elemental references"),
        "settings": {
            "stability_threshold_eV_per_atom": cfg.stability_threshold,
            "stability_tolerance_eV_per_atom": cfg.stability_tolerance,
            "n_bootstrap": cfg.n_bootstrap,
            "seed": cfg.seed,
            "force_cosine_min_norm_eV_per_A": cfg.force_cosine_min_norm,
        },
        "stability": {
            **stab.report,
            "rule": f"stable ⇔ E ≤ {cfg.stability_threshold} + {cfg.stability_tolerance} eV/atom; E = decomposition energy against the hull of all "
            "other phases (Bartel 2020) where `stability_basis` is decomposition_energy, E = E_hull,MP + ΔE_form (shift formula) in `shift_*` keys",
            "missing_predictions": "counted as predicted unstable (Matbench Discovery): n_stability_missing_predictions per set",
            "daf_prevalence": "stable fraction of the set's labelled rows (missing predictions included), not of the whole dataset",
        },
        "strategies": strategies,
        "gap": gap_report(gap_sums, cfg),
        "contamination": contam,
        "throughput": dict(throughput or {}),
        "coverage": coverage,
        "notes": label_notes(res.has_truth, res.has_pred, energy_kind, coverage),
    }

    from xtalbench.evaluate.plots import write_parity

    plot_dir = paths.plots_dir / name
    result["plots"] = {
        quantity: write_parity(plot_dir, quantity, pts, model=name, max_points=cfg.plot_max_points, seed=cfg.seed)
        for quantity, pts in sorted(res.points.items())
    }
    write_json(result, paths.metrics(name))
    return result
