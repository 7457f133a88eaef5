"""`xtalbench finetune <dataset>`: fine-tuned ensembles per fold, conformal intervals, learning curve.

The dataset's method comes from params `finetune.datasets`: `readout-head` (formation energies,
frozen backbone) or `chgnet-trainer` (frames: energies, forces, stresses). Writes
`datasets/<d>/finetune/<model>/predictions.parquet`, `metrics/<d>/finetune-<model>.json` and
`plots/<d>/finetune-<model>/*.csv`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset name in params.yaml `finetune.datasets`")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _scratch_mae(path: Path, model: str | None, strategy: str, fold: int) -> dict[str, Any] | None:
    """The no-pretraining baseline's test E_form MAE on the same fold, from its metrics file."""
    if not model or not path.exists():
        return None
    data = json.loads(path.read_text())
    block = ((data.get("strategies") or {}).get(strategy) or {}).get("folds", {}).get(str(fold), {}).get("test") or {}
    value = block.get("e_form_mae_meV_per_atom")
    return None if value is None else {"model": model, "e_form_mae_meV_per_atom": value, "source": str(path)}


def _folds(paths: Any, strategies: dict[str, Any], dataset: str):
    """(strategy, fold, roles, wanted) over every fold of the requested strategies."""
    import pyarrow.parquet as pq

    from xtalbench.finetune.stage import FinetuneError, fold_roles

    for strategy, wanted in strategies.items():
        if not paths.split(strategy).exists():
            raise FinetuneError(f"{paths.split(strategy)}: no such split (params finetune strategies: {strategy}); run `xtalbench split {dataset}`")
        split = pq.read_table(paths.split(strategy), columns=["material_id", "fold", "role"]).to_pandas()
        for fold, roles in fold_roles(split):
            yield strategy, fold, roles, wanted == "all" or fold in wanted


def run_readout(args: argparse.Namespace, p: Any, paths: Any, spec: Any, device: str) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    import pandas as pd
    import pyarrow.parquet as pq

    from xtalbench.finetune.backbone import chgnet_backbone
    from xtalbench.finetune.stage import (
        FinetuneError,
        governance_rows,
        learning_curve,
        load_materials,
        run_fold,
    )

    start = time.perf_counter()
    frames = pq.read_table(paths.dedup, columns=["frame_id", "material_id", "numbers", "positions", "lattice", "pbc"]).to_pandas()
    last = frames.groupby("material_id", sort=True).tail(1).sort_values("material_id", kind="stable")
    backbone = chgnet_backbone(last.to_dict("records"), spec, p.mp_references, device=device, batch_size=p.batch_size, progress=not args.no_progress)
    backbone_seconds = time.perf_counter() - start
    loco = paths.split("loco") if paths.split("loco").exists() else None
    materials = load_materials(str(paths.dedup), str(paths.features) if paths.features.exists() else None, str(loco) if loco else None, backbone,
                               p.competing_phases, p.hull_scheme_policy)
    folds, predictions, comparison, all_roles = {}, [], [], {}
    for strategy, fold, roles, wanted in _folds(paths, p.strategies, args.dataset):
        all_roles[(strategy, fold)] = roles
        if not wanted:
            continue
        metrics, table = run_fold(materials, roles, p, p.seed + fold)
        folds[f"{strategy}-{fold}"] = metrics
        predictions.append(table.assign(strategy=strategy, fold=fold))
        test = metrics["test"]
        comparison.append({
            "strategy": strategy, "fold": fold, "in_distribution": strategy == "random",
            "zero_shot": {k: test["zero_shot"][k] for k in ("e_form_mae_meV_per_atom", "e_form_mae_ci95_meV_per_atom", "spearman_rho")},
            "finetuned": {k: test["finetuned"][k] for k in ("e_form_mae_meV_per_atom", "e_form_mae_ci95_meV_per_atom", "spearman_rho", "coverage")},
            "from_scratch": _scratch_mae(paths.metrics(p.scratch_model) if p.scratch_model else Path("-"), p.scratch_model, strategy, fold),
        })
    key = (p.learning_curve.strategy, p.learning_curve.fold)
    if key not in all_roles:
        raise FinetuneError(f"params finetune.learning_curve: split {key[0]} has no fold {key[1]}")
    curve = learning_curve(materials, all_roles[key], p)
    result = {
        "method": "readout-head: frozen CHGNet backbone (pooled crystal features); new MLP heads learn E_form - E_form(zero-shot)",
        "e_hull_method": materials.stability["method"], "stability_labels": materials.stability, "stability_threshold": p.stability_threshold,
        "folds": folds, "comparison": comparison, "learning_curve": curve, "governance": governance_rows(folds, p.governance),
        "throughput": {"backbone_seconds": backbone_seconds, "materials": len(last)},
    }
    plots = {
        "learning_curve.csv": pd.DataFrame({"n_train": curve["sizes"], "test_mae_meV_per_atom": curve["mae"]}),
        "error_vs_novelty.csv": pd.DataFrame(
            [dict(row, fold=k) for k, m in folds.items() for row in m["test"].get("error_vs_novelty", [])],
            columns=["fold", "bin", "distance_lo", "distance_hi", "n", "mae_meV_per_atom", "coverage"],
        ),
    }
    return result, pd.concat(predictions, ignore_index=True), plots


def run_trainer(args: argparse.Namespace, p: Any, paths: Any, spec: Any, device: str) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    import pandas as pd
    import pyarrow.parquet as pq

    from xtalbench.evaluate.scoring import energies_mp2020_corrected
    from xtalbench.finetune.frames import run_frames_fold

    columns = ["frame_id", "material_id", "numbers", "positions", "lattice", "pbc", "energy", "forces", "stress"]
    frames = pq.read_table(paths.dedup, columns=columns).to_pandas()
    frames = frames[frames["energy"].notna() & frames["forces"].notna() & frames["stress"].notna()].sort_values("frame_id", kind="stable")
    folds, predictions, start = {}, [], time.perf_counter()
    for strategy, fold, roles, wanted in _folds(paths, p.trainer.strategies, args.dataset):
        if wanted:
            metrics, table = run_frames_fold(frames, roles, p, p.seed + fold, device, spec, energies_mp2020_corrected(spec))
            folds[f"{strategy}-{fold}"] = metrics
            predictions.append(table.assign(strategy=strategy, fold=fold))
    trained = sum(m["n_train_frames"] for m in folds.values()) * p.trainer.epochs * (p.trainer.members or p.members)
    result = {
        "method": f"chgnet-trainer: CHGNet's Trainer on energies, forces and stresses; trainable modules {p.trainer.trainable}, {p.trainer.epochs} epochs",
        "folds": folds,
        "throughput": {"train_frame_epochs": trained, "seconds": time.perf_counter() - start},
    }
    errors = pd.DataFrame([
        {"label": f"{key} {role} {kind.replace('_', '-')}", "fold": key, "role": role, "kind": kind,
         "energy_mae_meV_per_atom": b["energy_mae_meV_per_atom"], "force_mae_meV_per_A": b["force_mae_meV_per_A"], "stress_mae_GPa": b["stress_mae_GPa"]}
        for key, m in folds.items() for role in ("val", "test") for kind, b in ((k, m[role][k]) for k in ("zero_shot", "finetuned"))
    ])
    return result, pd.concat(predictions, ignore_index=True), {"errors.csv": errors}


def run(args: argparse.Namespace) -> int:
    import pyarrow as pa
    import torch

    from xtalbench.core.device import resolve_device
    from xtalbench.core.errors import ParamsError
    from xtalbench.core.io import StageOutputs
    from xtalbench.core.params import parse_section, read_params
    from xtalbench.core.project import Paths, write_json, write_parquet
    from xtalbench.finetune.params import FinetuneParams
    from xtalbench.models import load_spec

    p = parse_section(FinetuneParams, read_params(args.params, args.dataset), "finetune", args.params)
    if args.dataset not in p.datasets:
        raise ParamsError(f"{args.params}: finetune.datasets has no entry {args.dataset!r} (has: {', '.join(p.datasets) or 'none'})")
    if p.threads:
        torch.set_num_threads(p.threads)
    method = p.datasets[args.dataset]
    paths, spec, device, start = Paths(args.dataset), load_spec(p.model), resolve_device(p.device), time.perf_counter()
    result, predictions, plots = (run_readout if method == "readout-head" else run_trainer)(args, p, paths, spec, device)
    members = p.members if method == "readout-head" else (p.trainer.members or p.members)
    result = {"model": f"finetune-{p.model}", "backbone": p.model, "members": members, "coverage_target": p.conformal.coverage, **result}
    result["throughput"].update({"total_seconds": time.perf_counter() - start, "device": device})
    sort = ["strategy", "fold", "role", "frame_id"]
    with StageOutputs(f"finetune {args.dataset}", summarise_warnings=False) as out:  # together, metrics last
        table = pa.Table.from_pandas(predictions.sort_values(sort, kind="stable"), preserve_index=False)
        write_parquet(table, out.path(paths.data_dir / "finetune" / p.model / "predictions.parquet"))
        plot_dir = paths.plots_dir / f"finetune-{p.model}"
        for name, frame in plots.items():
            frame.to_csv(out.path(plot_dir / name), index=False, lineterminator="\n")
        write_json(result, out.path(paths.metrics(f"finetune-{p.model}")))
    checks = result.get("governance", [])
    summary = f", governance {sum(r['status'] == 'PASS' for r in checks)}/{len(checks)} PASS" if checks else ""
    print(f"finetune {args.dataset} ({method}): {len(result['folds'])} folds x {members} members{summary} ({time.perf_counter() - start:.0f} s)")
    return 0
