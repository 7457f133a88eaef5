"""The finetune stage: per (strategy, fold), fit readout heads on train, calibrate, score val/test.

Roles: the fold's train role trains the heads; its val role is split by a seeded draw of
materials into a stopping half (early stopping) and a calibration half (split conformal), so
the calibration data never steered training and the finite-sample guarantee holds. Metrics are
reported on the calibration half (`val`) and on `test`.
Stability uses decomposition energies (`xtalbench.evaluate.hull`, Bartel et al. 2020): a label's
E_d against the hull of all *other* MP competing phases (E_hull above the hull, the negative
margin on it), and a prediction's E_d = label E_d + its E_form error; with
`competing_phases: null` the shift formula E_hull,MP + (E_form,pred − E_form,MP) instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from xtalbench.core.errors import XtalbenchError
from xtalbench.finetune.conformal import SplitConformal
from xtalbench.finetune.heads import HeadEnsemble
from xtalbench.finetune.learning_curve import bootstrap_fit
from xtalbench.finetune.novelty import binned, nearest_train_distance
from xtalbench.finetune.params import FinetuneParams
from xtalbench.finetune.screening import bootstrap_mae_ci, screening_metrics

SHIFT_METHOD = "shift: E_hull,MP + (E_form,pred - E_form,MP)"
DECOMPOSITION_METHOD = "decomposition energy against the other MP competing phases (Bartel 2020; xtalbench.evaluate.hull) + E_form error"


STABILITY_TOLERANCE = 1e-9  # eV/atom: stable ⇔ E ≤ threshold + tolerance (as evaluate.stability_tolerance)


class FinetuneError(XtalbenchError, ValueError):
    """Inputs the finetune stage cannot use (no labels, empty roles)."""


@dataclass
class Materials:
    """One row per material (its last frame): backbone features, labels, SOAP, LOCO cluster."""

    table: pd.DataFrame          # material_id, frame_id, formula, e_form, e_hull, e_d, e_form_zero_shot, cluster
    features: np.ndarray         # backbone features (n, d)
    soap: np.ndarray | None      # SOAP (n, k) for novelty
    stability: dict[str, Any] | None = None  # how e_d was obtained (label_stability's report)

    def index(self, material_ids: np.ndarray) -> np.ndarray:
        lookup = pd.Series(np.arange(len(self.table)), index=self.table["material_id"].to_numpy())
        return lookup.reindex(material_ids).to_numpy()


def fold_roles(split: pd.DataFrame) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """(fold, {role: material ids}) per fold of a split table (sorted, unique)."""
    for fold, group in split.groupby("fold", sort=True):
        yield int(fold), {role: np.unique(g["material_id"].to_numpy()) for role, g in group.groupby("role")}


def split_val(val: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded halves of the val materials: (stopping, calibration)."""
    order = np.random.default_rng(seed).permutation(len(val))
    half = len(val) // 2
    return np.sort(val[order[:half]]), np.sort(val[order[half:]])


def _usable(m: Materials, rows: np.ndarray) -> np.ndarray:
    """Row numbers (from `Materials.index`, NaN for unknown ids) with a label and a zero-shot value."""
    rows = rows[~np.isnan(rows.astype(float))].astype(int)
    ok = np.isfinite(m.table["e_form_zero_shot"].to_numpy()) & np.isfinite(m.table["e_form"].to_numpy())
    return rows[ok[rows]]


def _inputs(m: Materials, rows: np.ndarray) -> np.ndarray:
    zs = m.table["e_form_zero_shot"].to_numpy()[rows][:, None]
    return np.hstack([m.features[rows], zs]).astype(np.float32)


def _targets(m: Materials, rows: np.ndarray) -> np.ndarray:
    return (m.table["e_form"].to_numpy() - m.table["e_form_zero_shot"].to_numpy())[rows]


def fit_heads(m: Materials, train: np.ndarray, stop: np.ndarray, p: FinetuneParams, members: int, seed: int) -> HeadEnsemble:
    heads = HeadEnsemble(members=members, seed=seed, **p.head.model_dump())
    return heads.fit(_inputs(m, train), _targets(m, train), _inputs(m, stop), _targets(m, stop))


def predict(m: Materials, heads: HeadEnsemble, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, spread = heads.predict(_inputs(m, rows))
    return m.table["e_form_zero_shot"].to_numpy()[rows] + mean, spread


def _role_block(m: Materials, rows: np.ndarray, ef_pred: np.ndarray, intervals: np.ndarray | None, p: FinetuneParams, seed: int) -> dict[str, Any]:
    t = m.table.iloc[rows]
    ef_true, eh_true = t["e_form"].to_numpy(), t["e_d"].to_numpy()
    eh_pred = eh_true + (ef_pred - ef_true)
    eh_int = None if intervals is None else intervals + (eh_true - ef_true)[:, None]
    out = screening_metrics(ef_true, ef_pred, eh_true, eh_pred, eh_int, p.stability_threshold + STABILITY_TOLERANCE)
    ci = bootstrap_mae_ci(np.abs(ef_pred - ef_true), t["material_id"].to_numpy(), p.n_bootstrap, seed)
    out["e_form_mae_ci95_meV_per_atom"] = None if ci is None else [c * 1000 for c in ci]
    return out


def run_fold(m: Materials, roles: dict[str, np.ndarray], p: FinetuneParams, seed: int) -> tuple[dict[str, Any], pd.DataFrame]:
    """Fit, calibrate and score one fold; metrics and the per-material predictions."""
    train = m.index(roles.get("train", np.array([], dtype=object)))
    val = m.index(roles.get("val", np.array([], dtype=object)))
    test = m.index(roles.get("test", np.array([], dtype=object)))
    train, val, test = (_usable(m, r) for r in (train, val, test))
    if p.max_train_materials and len(train) > p.max_train_materials:
        train = np.sort(np.random.default_rng(seed).choice(train, p.max_train_materials, replace=False))
    stop, cal = split_val(val, seed)
    if min(len(train), len(stop), len(cal), len(test)) < 2:
        raise FinetuneError(f"fold needs >= 2 usable materials per role; got train {len(train)}, val {len(val)}, test {len(test)}")
    heads = fit_heads(m, train, stop, p, p.members, seed)
    clusters = m.table["cluster"].to_numpy()
    ef_cal, _ = predict(m, heads, cal)
    conformal = SplitConformal(p.conformal.coverage, p.conformal.min_cluster_size).fit(m.table["e_form"].to_numpy()[cal] - ef_cal, clusters[cal])
    metrics: dict[str, Any] = {"epochs": heads.epochs_, "n_train": len(train), "n_stop": len(stop), "n_calibration": len(cal)}
    frames = []
    for role, rows in (("val", cal), ("test", test)):
        ef_pred, spread = predict(m, heads, rows)
        intervals, source = conformal.predict_interval(ef_pred, clusters[rows])
        zero_shot = m.table["e_form_zero_shot"].to_numpy()[rows]
        metrics[role] = {
            "finetuned": _role_block(m, rows, ef_pred, intervals, p, seed),
            "zero_shot": _role_block(m, rows, zero_shot, None, p, seed),
            "interval_from_cluster": float(np.mean(source == "cluster")),
        }
        frames.append(pd.DataFrame({
            "material_id": m.table["material_id"].to_numpy()[rows], "frame_id": m.table["frame_id"].to_numpy()[rows], "role": role,
            "e_form": m.table["e_form"].to_numpy()[rows], "e_form_pred": ef_pred, "e_form_spread": spread,
            "e_form_lo": intervals[:, 0], "e_form_hi": intervals[:, 1], "interval_source": source.astype(str),
            "e_form_zero_shot": zero_shot, "cluster": clusters[rows],
        }))
    predictions = pd.concat(frames, ignore_index=True)
    predictions["novelty"] = np.nan
    if m.soap is not None:
        for role, rows in (("val", cal), ("test", test)):
            predictions.loc[predictions["role"] == role, "novelty"] = nearest_train_distance(m.soap[train], m.soap[rows])
        t = predictions[predictions["role"] == "test"]
        covered = ((t["e_form"] >= t["e_form_lo"]) & (t["e_form"] <= t["e_form_hi"])).to_numpy()
        metrics["test"]["error_vs_novelty"] = binned(
            t["novelty"].to_numpy(), np.abs(t["e_form_pred"] - t["e_form"]).to_numpy(), covered, t["material_id"].to_numpy(), p.novelty_bins, p.n_bootstrap, seed
        )
    return metrics, predictions


def learning_curve(m: Materials, roles: dict[str, np.ndarray], p: FinetuneParams) -> dict[str, Any]:
    """Test MAE against training size on one fold (the same stopping half and test rows throughout)."""
    lc = p.learning_curve
    train, test = _usable(m, m.index(roles["train"])), _usable(m, m.index(roles["test"]))
    stop, _ = split_val(m.index(roles["val"]).astype(int), p.seed)
    stop = _usable(m, stop)
    sizes = [s for s in lc.sizes if s < len(train)] + ([len(train)] if any(s >= len(train) for s in lc.sizes) else [])
    order = np.random.default_rng(p.seed).permutation(train)  # nested subsets: size n is the first n
    errors = []
    for n in sizes:
        heads = fit_heads(m, np.sort(order[:n]), stop, p, lc.members, p.seed)
        ef_pred, _ = predict(m, heads, test)
        errors.append(np.abs(ef_pred - m.table["e_form"].to_numpy()[test]) * 1000)
    groups = [m.table["material_id"].to_numpy()[test]] * len(sizes)
    out = bootstrap_fit(np.array(sizes), errors, groups, p.n_bootstrap, p.seed, lc.target_mae_meV_per_atom)
    out.update({"strategy": lc.strategy, "fold": lc.fold, "unit": "meV/atom", "capped_by_fold": len(sizes) < len(lc.sizes) or sizes[-1] != lc.sizes[-1]})
    return out


def governance_rows(folds: dict[str, dict[str, Any]], g: Any) -> list[dict[str, Any]]:
    """One row per (check, strategy, fold) on the fine-tuned test role: value, threshold, PASS/FAIL."""
    checks = [
        ("ranking Spearman rho", "spearman_rho", ">", g.spearman_rho_min),
        ("interval coverage", "coverage", ">=", g.coverage_min),
        ("false-kill rate", "false_kill_rate", "<", g.false_kill_rate_max),
        ("KEEP precision", "keep_precision", ">", g.keep_precision_min),
    ]
    rows = []
    for key, fold in folds.items():
        block = fold["test"]["finetuned"]
        for label, metric, op, threshold in checks:
            value = block.get(metric)
            if value is None:
                status = "NOT-COMPUTED"
            else:
                ok = {">": value > threshold, ">=": value >= threshold, "<": value < threshold}[op]
                status = "PASS" if ok else "FAIL"
            rows.append({"check": label, "metric": metric, "fold": key, "op": op, "threshold": threshold, "value": value, "status": status})
    return rows


def label_stability(table: pd.DataFrame, competing_phases: str | None, policy: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Each material's label E_d (decomposition energy), or its E_hull when no phases are given."""
    if not competing_phases:
        return table["e_hull"].to_numpy(dtype=float), {"method": SHIFT_METHOD}
    from xtalbench.evaluate import hull

    labels = table.loc[np.isfinite(table["e_form"]), ["material_id", "formula", "e_form"]]
    phases, report = hull.build_competing_phases(labels, competing_phases, policy)
    e_d, _, counts = hull.decomposition_energies(phases, table["material_id"].tolist(), table["formula"].tolist(),
                                                 table["e_form"].to_numpy(float), table["e_hull"].to_numpy(float), check_above=False)
    return e_d, {"method": DECOMPOSITION_METHOD, "competing_phases": report, **counts}


def load_materials(dedup: str, features: str | None, loco_split: str | None, backbone: pa.Table,
                   competing_phases: str | None = None, policy: str = "correct") -> Materials:
    frames = pq.read_table(dedup, columns=["frame_id", "material_id", "formula", "formation_energy_per_atom", "e_above_hull"]).to_pandas()
    if frames["formation_energy_per_atom"].isna().all():
        raise FinetuneError(f"{dedup}: column 'formation_energy_per_atom' has no values; the readout-head method fine-tunes formation energies")
    last = frames.groupby("material_id", sort=True).tail(1).sort_values("material_id", kind="stable")
    b = backbone.to_pandas().set_index("frame_id")
    table = pd.DataFrame({
        "material_id": last["material_id"].to_numpy(), "frame_id": last["frame_id"].to_numpy(), "formula": last["formula"].to_numpy(),
        "e_form": last["formation_energy_per_atom"].to_numpy(dtype=float), "e_hull": last["e_above_hull"].to_numpy(dtype=float),
        "e_form_zero_shot": b["e_form_zero_shot"].reindex(last["frame_id"]).to_numpy(dtype=float),
    })
    width = max((len(f) for f in b["features"] if f is not None), default=0)
    feats = np.zeros((len(table), width), dtype=np.float32)
    for i, f in enumerate(b["features"].reindex(table["frame_id"])):
        if f is not None and len(f) == width:
            feats[i] = f
        else:
            table.loc[i, "e_form_zero_shot"] = np.nan  # no backbone output: not usable
    table["cluster"] = -1
    if loco_split:
        loco = pq.read_table(loco_split, columns=["material_id", "cluster"]).to_pandas().dropna().drop_duplicates("material_id")
        table["cluster"] = loco.set_index("material_id")["cluster"].reindex(table["material_id"]).fillna(-1).astype(int).to_numpy()
    soap = None
    if features:
        from xtalbench.core.project import iter_batches

        names = pq.ParquetFile(features).schema_arrow.names
        column = "soap" if "soap" in names else None
        if column:
            ids, vecs = [], []
            for batch in iter_batches(features, columns=["frame_id", column]):
                ids.extend(batch.column("frame_id").to_pylist())
                flat = batch.column(column).flatten().to_numpy(zero_copy_only=False)
                vecs.append(np.asarray(flat, dtype=np.float32).reshape(len(batch), -1))
            frame_rows = pd.Series(np.arange(len(ids)), index=ids)
            found = frame_rows.reindex(table["frame_id"]).to_numpy()
            all_vecs = np.vstack(vecs)
            soap = np.where(np.isnan(found)[:, None], 0.0, all_vecs[np.nan_to_num(found).astype(int)])
    table["e_d"], stability = label_stability(table, competing_phases, policy)
    return Materials(table=table, features=feats, soap=soap, stability=stability)
