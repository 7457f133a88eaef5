"""Train small MACE models on the train role of chosen split folds (mace-torch's `mace_run_train`).

The target follows the model spec's `energy_kind` for the dataset: `formation` (MP-20: relaxed
structures with formation energies only) trains on E_form × N with zero forces and all E0s = 0,
so the model predicts E_form × N; `total` (trajectory frames) trains on DFT energies and forces
with average E0s. Rows without the needed label are skipped and counted, never silently lost.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xtalbench.core.errors import XtalbenchError

# Hyper-parameters of the offline default: a few minutes per model on 2 CPU cores.
DEFAULT_HYPER = {
    "model": "MACE",
    "num_channels": 32,
    "max_L": 0,
    "r_max": 5.0,
    "num_interactions": 2,
    "correlation": 2,
    "max_ell": 2,
    "batch_size": 10,
    "valid_batch_size": 20,
    "max_num_epochs": 5,
    "lr": 0.01,
    "default_dtype": "float32",
}


class TrainError(XtalbenchError, RuntimeError):
    pass


@dataclass(frozen=True)
class FoldData:
    """The frames one model trains and validates on, plus what was left out and why."""

    train: list[dict[str, Any]]
    valid: list[dict[str, Any]]
    skipped: list[dict[str, str]] = field(default_factory=list)  # {frame_id, role, reason}
    capped: int = 0  # train rows left out by max_train_frames


def fold_rows(frames: pa.Table, split: pa.Table, strategy: str, fold: int) -> dict[str, pa.Table]:
    """Frames of one fold by role (train/val/test), in frame_id order."""
    sel = split.filter(pc.equal(split["fold"], fold))
    if sel.num_rows == 0:
        folds = sorted(set(split["fold"].to_pylist()))
        raise TrainError(f"split {strategy!r} has no fold {fold} (folds: {folds})")
    out = {}
    for role in ("train", "val", "test"):
        ids = sel.filter(pc.equal(sel["role"], role))["frame_id"]
        rows = frames.filter(pc.is_in(frames["frame_id"], value_set=ids))
        out[role] = rows.sort_by("frame_id")
    return out


def _target(row: Mapping[str, Any], energy_kind: str) -> tuple[float, np.ndarray] | str:
    """(REF_energy, REF_forces) for a row, or the reason it cannot be used."""
    n = int(row["nsites"])
    if energy_kind == "formation":
        e_form = row.get("formation_energy_per_atom")
        if e_form is None or not np.isfinite(e_form):
            return "no formation_energy_per_atom label"
        return float(e_form) * n, np.zeros((n, 3))
    energy = row.get("energy")
    if energy is None or not np.isfinite(energy):
        return "no energy label"
    forces = row.get("forces")
    if forces is None:
        return "no forces label"
    return float(energy), np.asarray(forces, dtype=np.float64).reshape(n, 3)


def prepare_fold(
    roles: Mapping[str, pa.Table], energy_kind: str, max_train_frames: int | None = None, max_val_frames: int | None = None, seed: int = 0
) -> FoldData:
    """Labelled train/valid rows for mace; caps applied by a seeded draw over frame_id order."""
    skipped: list[dict[str, str]] = []
    picked: dict[str, list[dict[str, Any]]] = {}
    capped = 0
    for role, cap in (("train", max_train_frames), ("val", max_val_frames)):
        rows = []
        for row in roles[role].to_pylist():
            target = _target(row, energy_kind)
            if isinstance(target, str):
                skipped.append({"frame_id": row["frame_id"], "role": role, "reason": target})
            else:
                row["REF_energy"], row["REF_forces"] = target
                rows.append(row)
        if cap is not None and len(rows) > cap:
            keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=int(cap), replace=False))
            if role == "train":
                capped = len(rows) - int(cap)
            rows = [rows[i] for i in keep]
        picked[role] = rows
    return FoldData(train=picked["train"], valid=picked["val"], skipped=skipped, capped=capped)


def write_extxyz(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Rows with REF_energy / REF_forces → extxyz that mace_run_train reads."""
    import ase.io
    from ase import Atoms

    images = []
    for row in rows:
        n = int(row["nsites"])
        atoms = Atoms(
            numbers=list(row["numbers"]),
            positions=np.asarray(row["positions"]).reshape(n, 3),
            cell=np.asarray(row["lattice"]).reshape(3, 3),
            pbc=list(row["pbc"]),
        )
        atoms.info["REF_energy"] = float(row["REF_energy"])
        atoms.info["frame_id"] = row["frame_id"]
        atoms.arrays["REF_forces"] = np.asarray(row["REF_forces"], dtype=np.float64).reshape(n, 3)
        images.append(atoms)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, images, format="extxyz")
    return path


def mace_command(
    name: str, train_file: Path, valid_file: Path | None, work_dir: Path, energy_kind: str, elements: Sequence[int], hyper: Mapping[str, Any], device: str, seed: int
) -> list[str]:
    """The `mace_run_train` command line (run as `python -m mace.cli.run_train`)."""
    args = {**DEFAULT_HYPER, **dict(hyper)}
    e0s = "average" if energy_kind == "total" else "{" + ", ".join(f"{int(z)}: 0.0" for z in sorted(elements)) + "}"
    cmd = [
        sys.executable, "-m", "mace.cli.run_train",
        "--name", name,
        "--train_file", str(train_file),
        "--energy_key", "REF_energy",
        "--forces_key", "REF_forces",
        "--E0s", e0s,
        "--device", device,
        "--seed", str(int(seed)),
        "--work_dir", str(work_dir),
        "--model_dir", str(work_dir),
    ]  # fmt: skip
    if valid_file is not None:
        cmd += ["--valid_file", str(valid_file)]
    else:
        cmd += ["--valid_fraction", "0.1"]
    if energy_kind == "formation":
        cmd += ["--forces_weight", "0.0"]  # zero-force labels carry no information; fit energies only
    for key, value in sorted(args.items()):
        if isinstance(value, bool):
            if value:
                cmd.append(f"--{key}")
        elif value is not None:
            cmd += [f"--{key}", str(value)]
    return cmd


def _last_eval(work_dir: Path) -> dict[str, float]:
    """The final validation errors mace logged (results/*_train.txt, JSON lines)."""
    for path in sorted(work_dir.glob("results/*_train.txt")):
        evals = [json.loads(line) for line in path.read_text().splitlines() if '"mode": "eval"' in line]
        if evals:
            last = evals[-1]
            return {k: float(v) for k, v in last.items() if isinstance(v, (int, float)) and k != "mode"}
    return {}


def train_fold(
    data: FoldData,
    out_model: str | Path,
    energy_kind: str,
    hyper: Mapping[str, Any] | None = None,
    device: str = "cpu",
    seed: int = 0,
    log_file: str | Path | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train one MACE on a fold; writes `out_model` (+ log) and returns the training record.

    `threads` caps torch/OpenMP threads of the training process (1 is faster on a busy machine).
    """
    if len(data.train) < 2:
        raise TrainError(f"{out_model}: only {len(data.train)} labelled training frames; need at least 2")
    out_model = Path(out_model)
    out_model.parent.mkdir(parents=True, exist_ok=True)
    elements = sorted({int(z) for row in (*data.train, *data.valid) for z in row["numbers"]})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xtalbench-train-") as tmp:
        work = Path(tmp)
        train_file = write_extxyz(data.train, work / "train.extxyz")
        valid_file = write_extxyz(data.valid, work / "valid.extxyz") if len(data.valid) >= 1 else None
        cmd = mace_command("model", train_file, valid_file, work, energy_kind, elements, hyper or {}, device, seed)
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(int(threads))
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env)
        log = proc.stdout + proc.stderr
        for path in sorted(work.glob("logs/*.log")):
            log += path.read_text()
        if log_file is not None:
            Path(log_file).write_text(log)
        if proc.returncode != 0 or not (work / "model.model").exists():
            tail = "\n".join(log.strip().splitlines()[-15:])
            raise TrainError(f"mace_run_train failed for {out_model} (exit {proc.returncode}):\n{tail}")
        shutil.copyfile(work / "model.model", out_model)
        final = _last_eval(work)
    return {
        "model_file": str(out_model),
        "energy_kind": energy_kind,
        "n_train": len(data.train),
        "n_valid": len(data.valid),
        "n_skipped": len(data.skipped),
        "skipped_reasons": _count_reasons(data.skipped),
        "n_capped": data.capped,
        "elements": elements,
        "seconds": round(time.perf_counter() - start, 1),
        "final_validation": final,
        "hyper_parameters": {**DEFAULT_HYPER, **dict(hyper or {})},
        "device": device,
        "seed": seed,
    }


def _count_reasons(skipped: Sequence[Mapping[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in skipped:
        counts[s["reason"]] = counts.get(s["reason"], 0) + 1
    return dict(sorted(counts.items()))
