"""The zero-shot leaderboard: models × datasets, seen vs unseen, MatterSim anchors, throughput.

Reads every `metrics/zeroshot/scores/<d>/<m>.json` and `datasets/zeroshot/<d>/<m>.errors.parquet` of
params `zeroshot.models` × `zeroshot.datasets` (and `metrics/diatomics/<m>.json` when present).
Per model (its training set as the zeroshot metrics record it, from models/<m>.yaml), the **seen**
set is the dataset inside its declared training set (`seen_sets`:
training-set keyword → dataset, e.g. MPtrj → mptrj-random-1k); a model none of whose training
sets has one (MatPES-trained models) is compared against `reference_set` and flagged
`seen_is_training_set: false`. Ratios are unseen/seen MAE (headline subsets), with a CI from
independent material bootstraps of both sets (`scores.error_ratio`), per unseen set and pooled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from xtalbench.core.errors import XtalbenchError
from xtalbench.core.io import StageOutputs
from xtalbench.core.params import parse_section
from xtalbench.core.project import write_json
from xtalbench.zeroshot.anchors import SOURCE as ANCHOR_SOURCE
from xtalbench.zeroshot.anchors import anchors_for
from xtalbench.zeroshot.params import ZeroshotParams
from xtalbench.zeroshot.paths import output_paths
from xtalbench.zeroshot.scores import RATIO_METRICS, error_ratio

HEADLINE = ("energy_mae_meV_per_atom", "energy_rmse_meV_per_atom", "force_mae_component_meV_per_A", "force_mae_vector_norm_meV_per_A", "stress_mae_GPa")


class LeaderboardError(XtalbenchError, RuntimeError):
    """A missing input of the leaderboard; names the file and the stage that writes it."""


def seen_set(model: str, training_set: str, cfg: ZeroshotParams) -> tuple[str | None, bool, str]:
    """(seen dataset, whether it lies inside the model's training set, why)."""
    for keyword, dataset in cfg.seen_sets.items():
        if keyword.lower() in training_set.lower() and dataset in cfg.datasets:
            return dataset, True, f"{dataset} lies inside {model}'s training set {training_set}"
    if cfg.reference_set and cfg.reference_set in cfg.datasets:
        return cfg.reference_set, False, (f"no set here lies inside {model}'s training set {training_set}: its seen set differs; "
                                          f"ratios are against {cfg.reference_set} (MP structures it may share, other labels)")  # fmt: skip
    return None, False, f"no seen set for training set {training_set}"


def _headline_errors(errors: pd.DataFrame, metrics: Mapping[str, Any], dataset: str) -> pd.DataFrame:
    if metrics.get("headline_subset") == "gga":
        errors = errors[~errors["hubbard"]]
    errors = errors.copy()
    errors["material_id"] = dataset + ":" + errors["material_id"].astype(str)
    return errors


def _read(dataset: str, model: str, root: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    paths = output_paths(dataset, model, root)
    for key in ("metrics", "errors"):
        if not paths[key].exists():
            raise LeaderboardError(f"{paths[key]} does not exist: run `xtalbench zeroshot {dataset} {model}` first (dvc repro)")
    return json.loads(paths["metrics"].read_text()), pq.read_table(paths["errors"]).to_pandas()


def build(params: Mapping[str, Any], root: Path = Path(".")) -> dict[str, Any]:
    cfg = parse_section(ZeroshotParams, params, "zeroshot")
    out: dict[str, Any] = {"datasets": list(cfg.datasets), "models": {}, "anchors": {}, "anchor_source": ANCHOR_SOURCE}
    for dataset in cfg.datasets:
        out["anchors"][dataset] = anchors_for(dataset)
    for model in [*cfg.models, *([cfg.trained.model] if cfg.trained else [])]:
        read = {dataset: _read(dataset, model, root) for dataset in cfg.datasets}
        training_sets = {str((m.get("training_set") or {}).get("name") or m["contamination"]["by_database"]["training_set"]) for m, _ in read.values()}
        if len(training_sets) != 1:
            raise LeaderboardError(f"metrics/zeroshot/scores/*/{model}.json: training_set.name differs between sets ({sorted(training_sets)}): rerun zeroshot")
        seen, inside, why = seen_set(model, training_sets.pop(), cfg)
        statuses = [m.get("model_status") or {"status": "ok"} for m, _ in read.values()]
        status = next((s for s in statuses if s["status"] != "ok"), statuses[0])
        entry: dict[str, Any] = {"seen_set": seen, "seen_is_training_set": inside, "seen_note": why, "status": status, "datasets": {},
                                 "contamination": {}, "ratios": {}, "notes": {}}  # fmt: skip
        errors: dict[str, pd.DataFrame] = {}
        seconds = structures = atoms = 0.0
        hardware = None
        for dataset in cfg.datasets:
            metrics, frame_errors = read[dataset]
            errors[dataset] = _headline_errors(frame_errors, metrics, dataset)
            scores = metrics["scores"]
            entry["datasets"][dataset] = {k: scores.get(k) for k in HEADLINE} | {f"{k}_ci": scores.get(f"{k}_ci") for k in HEADLINE} | {
                "frames": scores.get("frames"), "headline_subset": metrics.get("headline_subset"),
                "energy_mae_after_constant_offset_meV_per_atom": (metrics.get("diagnostics") or {}).get("energy_offsets", {}).get(
                    "mae_after_constant_offset_meV_per_atom")}  # fmt: skip
            entry["contamination"][dataset] = metrics.get("contamination")
            entry["notes"][dataset] = metrics.get("notes", [])
            t = metrics.get("throughput") or {}
            seconds += float(t.get("seconds") or 0)
            structures += float(t.get("structures") or 0)
            atoms += float(t.get("atoms") or 0)
            hardware = hardware or {k: t.get(k) for k in ("device", "device_name", "dtype", "batch_size", "threads", "torch_version")}
        entry["throughput"] = {"seconds": round(seconds, 3), "structures": int(structures), "atoms": int(atoms),
                               "structures_per_s": round(structures / seconds, 2) if seconds else None,
                               "atoms_per_s": round(atoms / seconds, 1) if seconds else None}  # fmt: skip
        entry["hardware"] = hardware
        if seen is not None:
            unseen = [d for d in cfg.datasets if d != seen]
            for dataset in unseen:
                entry["ratios"][dataset] = {m: error_ratio(errors[dataset], errors[seen], m, cfg.n_bootstrap, cfg.seed, cfg.ci) for m in RATIO_METRICS}
            if unseen:
                pooled = pd.concat([errors[d] for d in unseen], ignore_index=True)
                entry["ratios"]["all_unseen"] = {m: error_ratio(pooled, errors[seen], m, cfg.n_bootstrap, cfg.seed, cfg.ci) for m in RATIO_METRICS}
        diatomics = root / "metrics" / "diatomics" / f"{model}.json"
        if diatomics.exists():
            entry["diatomics"] = json.loads(diatomics.read_text()).get("summary")
        out["models"][model] = entry
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ci(value: Any, ci: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def _label(name: str, entry: Mapping[str, Any]) -> str:
    """The model's row label: flagged when its YAML says its predictions are known to be wrong."""
    status = (entry.get("status") or {}).get("status", "ok")
    return name if status == "ok" else f"{name} ⚠ {status}"


def _sparse(scores: Mapping[str, Any], most: int) -> str:
    """A cell suffix like ` (n=2 of 30)` when a model scored fewer of a set's frames than another model did."""
    frames = int(scores.get("frames") or 0)
    return f" (n={frames} of {most})" if frames < most else ""


def render_markdown(board: Mapping[str, Any]) -> str:
    """The leaderboard as Markdown (what reports/leaderboard.md shows)."""
    datasets = board["datasets"]
    lines = ["# Zero-shot leaderboard: seen vs unseen real DFT sets", "",
             "Generated by `xtalbench leaderboard` from `metrics/zeroshot/scores/` (do not edit). Errors with 95% material-bootstrap CIs; "
             "sets are seeded samples (params `datasets.<set>.sample`), the published MatterSim figures are on the full sets "
             f"({board['anchor_source']}). Force MAE is the per-atom vector norm, as MatterSim reports it; stress MAE over 6 Voigt components.", ""]  # fmt: skip
    most = {d: max(int(e["datasets"].get(d, {}).get("frames") or 0) for e in board["models"].values()) for d in datasets}
    for metric, label, digits, scale in (("energy_mae_meV_per_atom", "Energy MAE (meV/atom)", 1, 1.0),
                                         ("force_mae_vector_norm_meV_per_A", "Force MAE, per-atom vector norm (eV/Å)", 3, 1e-3),
                                         ("force_mae_component_meV_per_A", "Force MAE, per component (eV/Å)", 3, 1e-3),
                                         ("stress_mae_GPa", "Stress MAE (GPa)", 3, 1.0)):  # fmt: skip
        lines += [f"## {label}", "", "| model | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
        for name, entry in board["models"].items():
            cells = []
            for d in datasets:
                s = entry["datasets"].get(d, {})
                v, ci = s.get(metric), s.get(f"{metric}_ci")
                cells.append(_ci(None if v is None else v * scale, None if not ci else [c * scale for c in ci], digits)
                             + (" (GGA)" if s.get("headline_subset") == "gga" else "") + _sparse(s, most[d]))  # fmt: skip
            lines.append(f"| {_label(name, entry)} | " + " | ".join(cells) + " |")
        for anchor in ("MatterSim-v1-1M", "MatterSim-v1-5M"):
            cells = [_fmt((board["anchors"].get(d, {}).get(anchor, {}).get(metric) or None) and board["anchors"][d][anchor][metric] * scale, digits) for d in datasets]
            if any(c != "—" for c in cells):
                lines.append(f"| {anchor} (published, full sets) | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Energy MAE after removing the median signed error (meV/atom; a diagnostic, no CI)", "",
              "How much of the energy error is one reference offset (MatPES-trained models: other POTCARs than MPtrj's labels).", "",
              "| model | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]  # fmt: skip
    for name, entry in board["models"].items():
        cells = [_fmt(entry["datasets"].get(d, {}).get("energy_mae_after_constant_offset_meV_per_atom")) for d in datasets]
        lines.append(f"| {_label(name, entry)} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += ["## Seen vs unseen: unseen/seen MAE ratio [95% CI]", "",
              "| model | seen set | inside training set | unseen set | energy | force (norm) | stress |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, entry in board["models"].items():
        for d, ratios in entry["ratios"].items():
            cells = [_ci(ratios[m]["ratio"], ratios[m]["ci"], 2) for m in RATIO_METRICS]
            lines.append(f"| {_label(name, entry)} | {entry['seen_set']} | {'yes' if entry['seen_is_training_set'] else 'no (seen set differs)'} | {d} | " + " | ".join(cells) + " |")
    lines += ["", "## Contamination (model × dataset)", "", "| model | dataset | by id | by database |", "|---|---|---|---|"]
    for name, entry in board["models"].items():
        for d, c in entry["contamination"].items():
            if not c:
                continue
            by_id, by_db = c["by_id"], c["by_database"]
            frac = "—" if by_id.get("fraction") is None else f"{by_id['fraction']:.2f} ({by_id['method']})"
            lines.append(f"| {_label(name, entry)} | {d} | {frac} | {by_db['overlap']}: {by_db['reason']} |")
    lines += ["", "## Throughput and hardware", "", "| model | structures/s | atoms/s | seconds | device | dtype | batch | threads |", "|---|---|---|---|---|---|---|---|"]
    for name, entry in board["models"].items():
        t, h = entry["throughput"], entry.get("hardware") or {}
        lines.append(f"| {_label(name, entry)} | {_fmt(t['structures_per_s'], 2)} | {_fmt(t['atoms_per_s'], 1)} | {_fmt(t['seconds'], 1)} | {h.get('device_name')} | {h.get('dtype')} | {h.get('batch_size')} | {h.get('threads')} |")
    diatomic = {n: e["diatomics"] for n, e in board["models"].items() if e.get("diatomics")}
    if diatomic:
        keys = ["pairs", "curve_rmse_capped_median_eV", "r_eq_median_abs_error_A", "well_depth_median_abs_error_eV", "r_eq_mae_A", "well_depth_mae_eV", "spurious_minima_per_pair", "repulsive_wall_fraction", "force_consistency_capped_mae_eV_per_A"]
        lines += ["", "## Diatomics vs PBE (medians and means over pairs)", "", "| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for name, s in diatomic.items():
            lines.append(f"| {_label(name, board['models'][name])} | " + " | ".join(_fmt(s.get(k), 3) if not isinstance(s.get(k), int) else str(s.get(k)) for k in keys) + " |")
    lines += ["", "## Notes (conventions per model × dataset)", ""]
    for name, entry in board["models"].items():
        lines.append(f"- **{name}**: seen set {entry['seen_set']} — {entry['seen_note']}")
        if (entry.get("status") or {}).get("status", "ok") != "ok":
            lines.append(f"  - ⚠ {entry['status']['status']}: {entry['status'].get('known_issues', '')}")
        for d, notes in entry["notes"].items():
            for note in notes:
                lines.append(f"  - {d}: {note}")
    return "\n".join(lines) + "\n"


def leaderboard(params: Mapping[str, Any], root: Path = Path("."), json_out: Path | None = None, markdown_out: Path | None = None) -> dict[str, Any]:
    board = build(params, root)
    json_out = json_out or root / "metrics" / "zeroshot" / "leaderboard.json"
    markdown_out = markdown_out or root / "metrics" / "zeroshot" / "leaderboard.md"
    with StageOutputs("leaderboard") as staged:  # both files or neither
        staged.path(markdown_out).write_text(render_markdown(board))
        write_json(board, staged.path(json_out))
    return board
