"""`score_model`: a model's predictions joined with the labels and every split → metrics JSON.

1. Per prediction row, additive error sums (`metrics.row_stats`) and, on MP-labelled data, the
   predicted formation energy and hull distance (`thermo`).
2. Joined with `splits/<dataset>/<strategy>.parquet` on `frame_id` (zero-shot models: each
   frame was predicted once and serves every fold) or on (`strategy`, `fold`, `frame_id`)
   (fold-trained models: each fold's model predicted that fold's val+test rows).
3. Metrics per strategy × fold × role, the mean and std over folds, cluster sizes beside each
   fold's scores, contamination, the LOCO/random gap with a material-bootstrap CI.
4. `metrics/<dataset>/<model>.json` and `plots/<dataset>/<model>/parity_<quantity>.{png,csv}`.

Layout of the JSON (stable keys; `dvc metrics diff` flattens with dots):
`strategies.<s>.folds.<k>.<role>.<metric>`, `strategies.<s>.mean.<role>.<metric>`,
`strategies.<s>.std.<role>.<metric>`, `gap.<metric>.{ratio,ci_low,ci_high,...}`,
`contamination.{method,fraction,...}`, `throughput.*`, `coverage.*`, `notes.<metric>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from xtalbench import metrics as M
from xtalbench.contamination import contamination
from xtalbench.gap import bootstrap_mae_ratio
from xtalbench.project import Paths, read_table, write_json
from xtalbench.thermo import DEFAULT_STABILITY_THRESHOLD, MP_REFERENCES, MP2020FormationEnergy, ThermoError, predicted_e_hull, stability_metrics

ROLES = ("train", "val", "test")
STABILITY_KEYS = ("f1", "precision", "recall", "accuracy", "daf", "false_kill_rate", "prevalence")
STABILITY_COUNTS = ("tp", "fp", "fn", "tn")
MEAN_KEYS = M.ERROR_METRICS + STABILITY_KEYS
TRUTH_COLUMNS = ["frame_id", "material_id", "nsites", "energy", "forces", "stress", "formation_energy_per_atom", "e_above_hull"]
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


def _key_columns(predictions: pa.Table) -> tuple[list[str | None], list[int | None]]:
    n = predictions.num_rows
    strategy = predictions.column("strategy").to_pylist() if "strategy" in predictions.column_names else [None] * n
    fold = predictions.column("fold").to_pylist() if "fold" in predictions.column_names else [None] * n
    return strategy, fold


def frame_errors(
    truth: pa.Table,
    predictions: pa.Table,
    energy_kind: str,
    cfg: ScoringConfig,
    source: str = "dedup.parquet",
    apply_mp2020: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, dict[str, list]]]:
    """Per prediction row: error sums, E_form/E_hull (pred and MP), and parity points.

    Returns (rows, coverage, points). Bad input raises ValueError naming the record and field.
    """
    if "frame_id" not in predictions.column_names:
        raise ValueError("predictions: field 'frame_id' missing")
    t_ids = truth.column("frame_id").to_pylist()
    index = {fid: j for j, fid in enumerate(t_ids)}
    p_ids = predictions.column("frame_id").to_pylist()
    strategy, fold = _key_columns(predictions)
    seen: set[tuple] = set()
    rows = np.empty(len(p_ids), dtype=np.int64)
    for i, fid in enumerate(p_ids):
        if fid not in index:
            raise ValueError(f"predictions: record {fid!r}, field 'frame_id': not in {source}")
        key = (strategy[i], fold[i], fid)
        if key in seen:
            raise ValueError(f"predictions: record {fid!r}, field 'frame_id': predicted twice for strategy {strategy[i]!r} fold {fold[i]!r}")
        seen.add(key)
        rows[i] = index[fid]
    nsites = truth.column("nsites").to_numpy()[rows].astype(np.int64)
    if "nsites" in predictions.column_names:
        p_n = predictions.column("nsites").to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(p_n != nsites)
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"predictions: record {p_ids[i]!r}, field 'nsites': {p_n[i]} but the frame has {nsites[i]} atoms")

    e_pred = _floats(predictions, "energy")
    e_true = _floats(truth, "energy", rows) if energy_kind == "total" else np.full(len(rows), np.nan)
    ef_true = _floats(truth, "formation_energy_per_atom", rows)
    eh_true = _floats(truth, "e_above_hull", rows)
    ef_pred, failures = _formation_energies(truth, rows, e_pred, ef_true, nsites, energy_kind, cfg, p_ids, apply_mp2020)
    eh_pred = np.where(np.isfinite(ef_pred) & np.isfinite(eh_true), predicted_e_hull(eh_true, ef_pred, ef_true), np.nan)

    f_pred, f_true = _lists(predictions, "forces"), _lists(truth, "forces")
    s_pred, s_true = _lists(predictions, "stress"), _lists(truth, "stress")
    stats = {c: np.zeros(len(rows)) for c in M.STAT_COLUMNS}
    for i in tqdm(range(len(rows)), desc="errors", unit="frame", disable=len(rows) < 5000, leave=False):
        j = int(rows[i])
        one = M.row_stats(
            nsites=int(nsites[i]),
            energy_pred=e_pred[i],
            energy_true=e_true[i],
            forces_pred=_slice(f_pred, i),
            forces_true=_slice(f_true, j),
            stress_pred=_slice(s_pred, i),
            stress_true=_slice(s_true, j),
            e_form_pred=ef_pred[i],
            e_form_true=ef_true[i],
            record=str(p_ids[i]),
            min_norm=cfg.force_cosine_min_norm,
        )
        for c, v in one.items():
            stats[c][i] = v

    frame = pd.DataFrame(
        {
            "frame_id": p_ids,
            "p_strategy": strategy,
            "p_fold": pd.array(fold, dtype="Int64"),
            **stats,
            "e_hull_true": eh_true,
            "e_hull_pred": eh_pred,
        }
    )
    coverage = {
        "n_predictions": len(p_ids),
        "n_truth_frames": len(t_ids),
        "n_without_energy": int(np.sum(~np.isfinite(e_pred))),
        "e_form": {
            "n_labelled": int(np.sum(np.isfinite(ef_true))),
            "n_computed": int(np.sum(np.isfinite(ef_pred))),
            "n_failed": len(failures),
            "failures": dict(sorted(failures.items())[:MAX_LISTED_FAILURES]),
        },
    }
    points = _parity_points(p_ids, strategy, fold, nsites, e_pred, e_true, ef_pred, ef_true, f_pred, f_true, s_pred, s_true, rows, cfg)
    return frame, coverage, points


def _formation_energies(
    truth: pa.Table,
    rows: np.ndarray,
    e_pred: np.ndarray,
    ef_true: np.ndarray,
    nsites: np.ndarray,
    energy_kind: str,
    cfg: ScoringConfig,
    p_ids: list[str],
    apply_mp2020: bool = True,
) -> tuple[np.ndarray, dict[str, str]]:
    """Predicted E_form per atom where an MP formation energy label exists (NaN elsewhere)."""
    ef_pred = np.full(len(rows), np.nan)
    wanted = np.isfinite(ef_true) & np.isfinite(e_pred)
    failures: dict[str, str] = {}
    if not wanted.any():
        return ef_pred, failures
    if energy_kind == "formation":
        ef_pred[wanted] = e_pred[wanted] / nsites[wanted]
        return ef_pred, failures
    from xtalbench.schema import to_structure

    thermo = MP2020FormationEnergy(references=cfg.mp_references, compatibility=apply_mp2020).fit()
    needed = sorted({int(rows[i]) for i in np.flatnonzero(wanted)})
    structure_cols = truth.select(["frame_id", *STRUCTURE_COLUMNS]).take(pa.array(needed))
    corrections: dict[int, tuple[float, Any] | str] = {}
    for j, row in zip(needed, tqdm(structure_cols.to_pylist(), desc="MP2020 corrections", unit="frame", leave=False), strict=True):
        structure = to_structure(row)
        try:
            corrections[j] = (thermo.correction(structure, row["frame_id"]), structure)
        except ThermoError as error:
            corrections[j] = error.reason
    for i in np.flatnonzero(wanted):
        got = corrections[int(rows[i])]
        if isinstance(got, str):
            failures[str(p_ids[i])] = got
            continue
        correction, structure = got
        try:
            ef_pred[i] = thermo.e_form_per_atom(float(e_pred[i]), structure, correction, str(p_ids[i]))
        except ThermoError as error:
            failures[str(p_ids[i])] = error.reason
    return ef_pred, failures


def _parity_points(p_ids, strategy, fold, nsites, e_pred, e_true, ef_pred, ef_true, f_pred, f_true, s_pred, s_true, rows, cfg):
    from xtalbench.plots import subsample

    def collect(mask: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> dict[str, list]:
        idx = np.flatnonzero(mask)
        return {
            "frame_id": [p_ids[i] for i in idx],
            "strategy": [strategy[i] for i in idx],
            "fold": [fold[i] for i in idx],
            "truth": truth[idx].tolist(),
            "prediction": pred[idx].tolist(),
        }

    points = {}
    ok = np.isfinite(e_pred) & np.isfinite(e_true)
    if ok.any():
        points["energy"] = collect(ok, e_true / nsites, e_pred / nsites)
    ok = np.isfinite(ef_pred) & np.isfinite(ef_true)
    if ok.any():
        points["e_form"] = collect(ok, ef_true, ef_pred)
    from ase.units import GPa

    for quantity, pred_lists, true_lists, scale in (("forces", f_pred, f_true, 1.0), ("stress", s_pred, s_true, 1.0 / GPa)):
        have = np.flatnonzero(pred_lists[2] & true_lists[2][rows])
        if not len(have):
            continue
        # a deterministic subset of frames, then all their components (subsampled again on plotting)
        have = have[subsample(len(have), max(1, cfg.plot_max_points // 10), cfg.seed)]
        out: dict[str, list] = {"frame_id": [], "strategy": [], "fold": [], "truth": [], "prediction": []}
        for i in have:
            p, t = _slice(pred_lists, int(i)), _slice(true_lists, int(rows[i]))
            out["frame_id"] += [p_ids[i]] * len(p)
            out["strategy"] += [strategy[i]] * len(p)
            out["fold"] += [fold[i]] * len(p)
            out["truth"] += (t * scale).tolist()
            out["prediction"] += (p * scale).tolist()
        points[quantity] = out
    return points


# --- joins with the splits ----------------------------------------------------------------


def load_splits(paths: Paths) -> dict[str, pd.DataFrame]:
    """Every `splits/<dataset>/<strategy>.parquet`, validated; sorted by strategy name."""
    out = {}
    files = sorted(paths.splits_dir.glob("*.parquet")) if paths.splits_dir.exists() else []
    if not files:
        raise SystemExit(f"no split files in {paths.splits_dir}: run the split stage first (dvc repro)")
    for path in files:
        df = read_table(path, columns=["frame_id", "material_id", "fold", "role", "cluster"]).to_pandas()
        bad = ~df["role"].isin(ROLES)
        if bad.any():
            row = df[bad].iloc[0]
            raise ValueError(f"{path}: record {row['frame_id']!r}, field 'role': {row['role']!r} is not one of {', '.join(ROLES)}")
        df["fold"] = df["fold"].astype("int64")
        out[path.stem] = df
    return out


def join_split(strategy: str, split: pd.DataFrame, scored: pd.DataFrame, per_fold: bool) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Split rows with their prediction errors (`scored` column True where predicted)."""
    scored = scored.assign(scored=True)
    if per_fold:
        preds = scored[scored["p_strategy"] == strategy]
        if preds.empty:
            return split.iloc[0:0].assign(scored=False), {"evaluated": False}
        folds = sorted(int(f) for f in preds["p_fold"].dropna().unique())
        if preds["p_fold"].isna().any():
            fid = preds[preds["p_fold"].isna()]["frame_id"].iloc[0]
            raise ValueError(f"predictions: record {fid!r}, field 'fold': null for a fold-trained model (strategy {strategy!r})")
        sub = split[split["fold"].isin(folds)]
        preds = preds.assign(fold=preds["p_fold"].astype("int64"))
        merged = sub.merge(preds.drop(columns=["p_strategy", "p_fold"]), on=["frame_id", "fold"], how="left")
        keys = set(zip(sub["frame_id"], sub["fold"], strict=True))
        stray = [(f, k) for f, k in zip(preds["frame_id"], preds["fold"], strict=True) if (f, k) not in keys]
        if stray:
            raise ValueError(f"predictions: record {stray[0][0]!r}, field 'fold': fold {stray[0][1]} of strategy {strategy!r} has no such frame")
        expected = merged["role"].isin(("val", "test"))
    else:
        merged = split.merge(scored.drop(columns=["p_strategy", "p_fold"]), on="frame_id", how="left")
        folds = sorted(int(f) for f in split["fold"].unique())
        expected = np.ones(len(merged), dtype=bool)
    merged["scored"] = merged["scored"].fillna(False).astype(bool)
    missing = expected & ~merged["scored"].to_numpy()
    return merged, {"evaluated": True, "folds": folds, "n_missing_predictions": int(missing.sum())}


def role_metrics(group: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """Metrics of one strategy × fold × role set (only rows with a prediction)."""
    out: dict[str, Any] = {"n": len(group), "n_materials": int(group["material_id"].nunique())}
    out.update(M.aggregate({c: group[c].to_numpy() for c in M.STAT_COLUMNS}))
    eh_true, eh_pred = group["e_hull_true"].to_numpy(), group["e_hull_pred"].to_numpy()
    ok = np.isfinite(eh_true) & np.isfinite(eh_pred)
    if ok.any():
        stab = stability_metrics(eh_true[ok], eh_pred[ok], threshold)
    else:
        stab = dict.fromkeys(STABILITY_KEYS + STABILITY_COUNTS)
    out.update({k: stab[k] for k in STABILITY_KEYS + STABILITY_COUNTS})
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


def gap_report(merged: dict[str, pd.DataFrame], cfg: ScoringConfig) -> dict[str, Any]:
    num, den = cfg.gap_strategies
    out: dict[str, Any] = {"numerator": num, "denominator": den}
    missing = [s for s in (num, den) if s not in merged or merged[s].empty]
    if missing:
        out["note"] = f"no scored {' or '.join(missing)} split: gap not computed"
        return out
    sums = {s: material_sums(merged[s][merged[s]["scored"] & (merged[s]["role"] == "test")]) for s in (num, den)}
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


def label_notes(truth: pa.Table, predictions: pa.Table, energy_kind: str, coverage: dict[str, Any]) -> dict[str, str]:
    """Why a metric is null everywhere (labels absent, model output absent)."""

    def has(table: pa.Table, column: str) -> bool:
        return column in table.column_names and table.column(column).null_count < table.num_rows

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
        if reason is None and not has(truth, label):
            reason = f"no DFT `{label}` labels in the dataset"
        if reason is None and not has(predictions, pred_column[label]):
            reason = f"the model gave no `{pred_column[label]}`"
        if reason is None and label == "formation_energy_per_atom" and coverage["e_form"]["n_computed"] == 0:
            reason = "no predicted formation energy could be computed (see coverage.e_form.failures)"
        if reason:
            notes.update(dict.fromkeys(metric_names, reason))
    if not has(truth, "e_above_hull"):
        notes.update(dict.fromkeys(STABILITY_KEYS, "no `e_above_hull` labels in the dataset"))
    elif "e_form_mae_meV_per_atom" in notes:
        notes.update(dict.fromkeys(STABILITY_KEYS, "no predicted formation energies: " + notes["e_form_mae_meV_per_atom"]))
    return notes


# --- entry point ------------------------------------------------------------------------------


def score_model(dataset: str, spec: Any, predictions: pa.Table, params: dict, throughput: dict, root: str | Path = ".") -> dict:
    """Score one model on every split of a dataset; write its metrics JSON and parity plots.

    `spec` needs `name`, `kind`, `energy_kind`, `training_set` (duck-typed). Fold-trained models
    (kind `mace-trained`, or predictions carrying a strategy) are joined on strategy+fold+frame.
    """
    cfg = ScoringConfig.from_params(params)
    paths = Paths(dataset, Path(root))
    name = str(getattr(spec, "name"))
    kind = getattr(spec, "kind", None)
    energy_kind = resolve_energy_kind(spec, dataset)
    n_strategy = predictions.num_rows - predictions.column("strategy").null_count if "strategy" in predictions.column_names else 0
    per_fold = n_strategy > 0
    if (kind == "mace-trained" or per_fold) and n_strategy < predictions.num_rows:
        i = predictions.column("strategy").to_pylist().index(None) if n_strategy else 0
        fid = predictions.column("frame_id")[i].as_py() if predictions.num_rows else "?"
        raise ValueError(f"predictions: record {fid!r}, field 'strategy': null, but a fold-trained model's rows need strategy and fold")

    truth = read_table(paths.dedup, columns=TRUTH_COLUMNS + STRUCTURE_COLUMNS)
    splits = load_splits(paths)
    if per_fold:
        unknown = sorted({s for s in predictions.column("strategy").to_pylist() if s is not None} - set(splits))
        if unknown:
            raise ValueError(f"predictions: field 'strategy': {unknown[0]!r} has no split file in {paths.splits_dir}")

    corrected = energies_mp2020_corrected(spec)
    scored, coverage, points = frame_errors(truth, predictions, energy_kind, cfg, source=str(paths.dedup), apply_mp2020=not corrected)

    strategies: dict[str, Any] = {}
    merged_all: dict[str, pd.DataFrame] = {}
    fold_sets: dict[tuple[str, int], tuple[set[str], set[str]]] = {}
    coverage["strategies"] = {}
    for strategy, split in splits.items():
        merged, info = join_split(strategy, split, scored, per_fold)
        coverage["strategies"][strategy] = info
        if not info["evaluated"]:
            continue
        merged_all[strategy] = merged
        folds: dict[str, dict[str, Any]] = {}
        for fold in info["folds"]:
            rows = split[split["fold"] == fold]
            fold_sets[(strategy, fold)] = (
                set(rows.loc[rows["role"] == "test", "material_id"]),
                set(rows.loc[rows["role"] == "train", "material_id"]),
            )
            got = merged[(merged["fold"] == fold) & merged["scored"]]
            folds[str(fold)] = {role: role_metrics(g, cfg.stability_threshold) for role, g in got.groupby("role", sort=True)}
        mean, std = fold_summary(folds)
        strategies[strategy] = {"folds": folds, "mean": mean, "std": std, "n_folds": len(folds)}

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
            "n_bootstrap": cfg.n_bootstrap,
            "seed": cfg.seed,
            "force_cosine_min_norm_eV_per_A": cfg.force_cosine_min_norm,
        },
        "strategies": strategies,
        "gap": gap_report(merged_all, cfg),
        "contamination": contam,
        "throughput": dict(throughput or {}),
        "coverage": coverage,
        "notes": label_notes(truth, predictions, energy_kind, coverage),
    }

    from xtalbench.plots import write_parity

    plot_dir = paths.plots_dir / name
    result["plots"] = {
        quantity: write_parity(plot_dir, quantity, pts, model=name, max_points=cfg.plot_max_points, seed=cfg.seed)
        for quantity, pts in sorted(points.items())
    }
    write_json(result, paths.metrics(name))
    return result
