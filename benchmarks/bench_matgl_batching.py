"""matgl: batched `MatglPredictor` (one PyG Batch per call) vs matgl's own PESCalculator per structure.

Runs inside the matgl environment (`make envs`), on real frames of mptrj-random-1k (the first
`--n`), energy, forces and stress from both, the same adapted model, ratios from this one run:

    PYTHONPATH=src .venvs/matgl-*/bin/python benchmarks/bench_matgl_batching.py [--n 96] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRAMES = ROOT.parent / "shared" / "data" / "mattersim-benchmarks" / "mptrj-random-1k.extxyz.gz"
MODELS = ["m3gnet-mp-2021", "m3gnet-matpes-pbe", "tensornet-matpes-pbe"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import os

    import torch
    from ase.io import iread
    from matgl.ext.ase import PESCalculator

    from xtalbench.core.schema import from_atoms, to_atoms
    from xtalbench.models.registry import load_model, load_spec

    os.chdir(ROOT)  # checkpoints are relative to the repository root
    with gzip.open(FRAMES, "rt") as handle:
        frames = [from_atoms(a, frame_id=str(i), material_id=str(i), source="mptrj") for i, a in zip(range(args.n), iread(handle, format="extxyz"))]
    n_atoms = sum(len(f["numbers"]) for f in frames)
    print(f"{len(frames)} mptrj-random-1k frames, {n_atoms} atoms, batch {args.batch_size}, torch threads {torch.get_num_threads()}")
    report = {"frames": len(frames), "atoms": n_atoms, "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(), "models": {}}
    for name in args.models.split(","):
        predictor = load_model(load_spec(name), dtype="float32", in_process=True, progress=False)
        calc = PESCalculator(predictor.potential, stress_unit="eV/A3")
        predictor.predict(frames[: args.batch_size], batch_size=args.batch_size)  # warm-up
        t0 = time.perf_counter()
        batched = predictor.predict(frames, batch_size=args.batch_size)
        t_batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        loop = []
        for frame in frames:
            atoms = to_atoms(frame, with_labels=False)
            atoms.calc = calc
            loop.append(atoms.get_potential_energy())
            atoms.get_forces(), atoms.get_stress()
        t_loop = time.perf_counter() - t0
        err = float(np.abs(batched["energy"] - np.asarray(loop)).max())
        print(f"{name:22s} loop {t_loop:6.2f} s  batched {t_batched:6.2f} s  speed-up {t_loop / t_batched:.2f}x  max |dE| {err:.1e} eV")
        report["models"][name] = {"loop_s": round(t_loop, 3), "batched_s": round(t_batched, 3), "speedup": round(t_loop / t_batched, 2), "max_abs_dE": err}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
