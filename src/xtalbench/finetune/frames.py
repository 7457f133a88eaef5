"""The chgnet-trainer method: per fold, fine-tune CHGNet members on frames and score E, F, S.

Roles as in `stage`: train frames (seeded cap) train; the val materials are halved into a
stopping half (best epoch) and a calibration half (split-conformal interval on energy per atom).
Zero-shot CHGNet predicts the same rows, so the two sit side by side.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from xtalbench.finetune.conformal import SplitConformal, coverage_and_width
from xtalbench.finetune.screening import bootstrap_mae_ci
from xtalbench.finetune.stage import FinetuneError, split_val
from xtalbench.finetune.trainer import chgnet_labels, finetune_member, predict_efs


def _errors(labels: tuple, pred: dict[str, Any]) -> dict[str, np.ndarray]:
    _, energies, forces, stresses = labels
    e_err = np.abs(np.asarray(pred["e"]) - energies) * 1000  # meV/atom
    f_err = np.array([np.abs(np.asarray(p) - np.asarray(t)).mean() * 1000 for p, t in zip(pred["f"], forces, strict=True)])  # meV/Å per frame
    s_true_gpa = [-0.1 * np.asarray(s) for s in stresses]  # VASP kBar → GPa, ASE sign (CHGNet's output convention)
    s_err = np.array([np.abs(np.asarray(p) - t).mean() for p, t in zip(pred["s"], s_true_gpa, strict=True)])
    return {"energy": e_err, "force": f_err, "stress": s_err}


def _block(errors: dict[str, np.ndarray], groups: np.ndarray, n_bootstrap: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(groups)}
    for key, unit in (("energy", "meV_per_atom"), ("force", "meV_per_A"), ("stress", "GPa")):
        out[f"{key}_mae_{unit}"] = float(errors[key].mean())
        out[f"{key}_mae_ci95_{unit}"] = bootstrap_mae_ci(errors[key], groups, n_bootstrap, seed)
    return out


def _sample(rows: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    if cap and len(rows) > cap:
        return rows.sample(n=cap, random_state=seed).sort_values("frame_id", kind="stable")
    return rows


def run_frames_fold(frames: pd.DataFrame, roles: dict[str, np.ndarray], p: Any, seed: int, device: str, spec: Any, mp2020_corrected: bool) -> tuple[dict[str, Any], pd.DataFrame]:
    from chgnet.model import CHGNet

    t = p.trainer
    by_role = lambda ids: frames[frames["material_id"].isin(ids)]
    stop_ids, cal_ids = split_val(roles.get("val", np.array([], dtype=object)), seed)
    train = _sample(by_role(roles.get("train", [])), t.max_train_frames, seed)
    stop = _sample(by_role(stop_ids), t.max_eval_frames, seed)
    cal = _sample(by_role(cal_ids), t.max_eval_frames, seed)
    test = _sample(by_role(roles.get("test", [])), t.max_eval_frames, seed)
    if min(len(train), len(stop), len(cal), len(test)) < 2:
        raise FinetuneError(f"fold needs >= 2 frames per role; got train {len(train)}, stop {len(stop)}, calibration {len(cal)}, test {len(test)}")
    labels = {name: chgnet_labels(df.to_dict("records"), mp2020_corrected, p.mp_references) for name, df in
              (("train", train), ("stop", stop), ("val", cal), ("test", test))}
    members = [finetune_member(labels["train"], labels["stop"], seed + k, t.epochs, t.lr, t.trainable, t.batch_size, device, spec.checkpoint)
               for k in range(t.members or p.members)]
    zero_shot = CHGNet.load(model_name=spec.checkpoint or "0.3.0", use_device=device, verbose=False)
    metrics: dict[str, Any] = {"n_train_frames": len(train), "n_stop_frames": len(stop), "n_calibration_frames": len(cal)}
    tables, conformal = [], None
    for role in ("val", "test"):
        structures = labels[role][0]
        preds = [predict_efs(m, structures) for m in members]
        e_members = np.array([pr["e"] for pr in preds])
        mean = {"e": e_members.mean(0), "f": [np.mean([pr["f"][i] for pr in preds], 0) for i in range(len(structures))],
                "s": [np.mean([pr["s"][i] for pr in preds], 0) for i in range(len(structures))]}
        truth = labels[role][1]
        if role == "val":
            conformal = SplitConformal(p.conformal.coverage, 0).fit(truth - mean["e"])
        intervals, _ = conformal.predict_interval(mean["e"])
        df = (cal if role == "val" else test)
        groups = df["material_id"].to_numpy()
        block = {"finetuned": _block(_errors(labels[role], mean), groups, p.n_bootstrap, seed),
                 "zero_shot": _block(_errors(labels[role], predict_efs(zero_shot, structures)), groups, p.n_bootstrap, seed)}
        cw = coverage_and_width(truth, intervals)
        block["finetuned"]["coverage"] = cw["coverage"]
        block["finetuned"]["interval_width_meV_per_atom"] = None if cw["median_width"] is None else cw["median_width"] * 1000
        metrics[role] = block
        tables.append(pd.DataFrame({"frame_id": df["frame_id"].to_numpy(), "material_id": groups, "role": role,
                                    "energy_per_atom": truth, "energy_per_atom_pred": mean["e"], "energy_per_atom_spread": e_members.std(0),
                                    "energy_per_atom_lo": intervals[:, 0], "energy_per_atom_hi": intervals[:, 1]}))
    return metrics, pd.concat(tables, ignore_index=True)
