"""Fine-tuning throughput on CPU: CHGNet's trainer (readout only vs every weight), the frozen-backbone
feature pass and the head ensemble — what `xtalbench plan` needs for the finetune stage.

Real MP task frames (../shared/data/mp-task-frames), labels in CHGNet's convention. Prints frames/s
per epoch of each way in the same run and the ratio readout-only / all-trainable.

    .venv/bin/python benchmarks/bench_finetune.py [--frames 24] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRAMES = ROOT.parent / "shared" / "data" / "mp-task-frames" / "mp_task_frames.extxyz.gz"


def load_rows(n: int) -> list[dict]:
    import gzip

    from ase.io import read

    with gzip.open(FRAMES, "rt") as handle:
        frames = read(handle, index=f":{n * 4}", format="extxyz")
    rows = []
    for i, atoms in enumerate(frames[:: 4][:n]):
        forces = np.asarray(atoms.arrays.get("dft_forces", np.zeros((len(atoms), 3))))
        rows.append({
            "frame_id": f"f{i}", "material_id": f"f{i}", "numbers": atoms.numbers.tolist(), "positions": atoms.positions.ravel().tolist(),
            "lattice": np.asarray(atoms.cell).ravel().tolist(), "pbc": [True] * 3, "energy": float(atoms.info["e_fr_energy"]),
            "forces": forces.ravel().tolist(), "stress": [0.0] * 6,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    import torch
    from chgnet.model import CHGNet

    from xtalbench.finetune.heads import HeadEnsemble
    from xtalbench.finetune.trainer import chgnet_labels, finetune_member

    torch.set_num_threads(1)
    rows = load_rows(args.frames)
    labels = chgnet_labels(rows, mp2020_corrected=False, references="unused")
    half = len(rows) * 3 // 4
    train, val = tuple(x[:half] for x in labels), tuple(x[half:] for x in labels)
    results: dict[str, float] = {}
    for name, trainable in (("readout_only", ["mlp"]), ("all_weights", ["*"])):
        start = time.perf_counter()
        finetune_member(train, val, seed=0, epochs=args.epochs, lr=1e-3, trainable=trainable, batch_size=4, device="cpu")
        seconds = time.perf_counter() - start
        results[f"trainer_{name}_frames_per_s"] = half * args.epochs / seconds
    model = CHGNet.load(verbose=False)
    start = time.perf_counter()
    feats = [model.predict_structure(s, task="e", return_crystal_feas=True)["crystal_fea"] for s in labels[0]]
    results["backbone_structures_per_s"] = len(feats) / (time.perf_counter() - start)
    x = np.random.default_rng(0).normal(size=(2000, 65)).astype(np.float32)
    y = x[:, 0] * 0.1
    start = time.perf_counter()
    HeadEnsemble(members=3, max_epochs=300, patience=30).fit(x[:1600], y[:1600], x[1600:], y[1600:])
    results["heads_3_members_2000_rows_seconds"] = time.perf_counter() - start
    results["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["ratio_readout_only_vs_all"] = results["trainer_readout_only_frames_per_s"] / results["trainer_all_weights_frames_per_s"]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
