"""matgl: batched `MatglPredictor` (one PyG Batch per call) vs matgl's own PESCalculator per structure.

Runs inside the matgl environment (`make envs`), on real frames of mptrj-random-1k (the first
`--n`) or, with `--cells rocksalt`, on the 2-16-atom cells of `bench_inference.py`; energy, forces
and stress from both, the same adapted model, ratios from this one run. The model's own time on
batches built beforehand bounds what any batching can gain on this machine (`speedup_ceiling`).

    PYTHONPATH=src .venvs/matgl-*/bin/python benchmarks/bench_matgl_batching.py [--n 96] [--batch-size 8] [--cells rocksalt] [--device cpu]
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
    parser.add_argument("--cells", default="mptrj", choices=["mptrj", "rocksalt"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both sides run there)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import os

    import torch
    from ase.io import iread
    from matgl.ext.ase import PESCalculator

    from xtalbench.core.schema import from_atoms, to_atoms
    from xtalbench.models.registry import load_model, load_spec

    os.chdir(ROOT)  # checkpoints are relative to the repository root
    if args.cells == "rocksalt":
        from cells import structures

        frames = structures(args.n, elements=(12, 8))  # MgO rock salt, every model's elements
    else:
        with gzip.open(FRAMES, "rt") as handle:
            frames = [from_atoms(a, frame_id=str(i), material_id=str(i), source="mptrj")
                      for i, a in zip(range(args.n), iread(handle, format="extxyz"))]  # fmt: skip
    n_atoms = sum(len(f["numbers"]) for f in frames)
    print(f"{len(frames)} {args.cells} frames, {n_atoms} atoms, batch {args.batch_size}, torch threads {torch.get_num_threads()}")
    report = {"cells": args.cells, "frames": len(frames), "atoms": n_atoms, "batch_size": args.batch_size,
              "torch_threads": torch.get_num_threads(), "models": {}}  # fmt: skip
    for name in args.models.split(","):
        predictor = load_model(load_spec(name), device=args.device, dtype="float32", in_process=True, progress=False)
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
        t_model = model_only_seconds(predictor, frames, args.batch_size)
        err = float(np.abs(batched["energy"] - np.asarray(loop)).max())
        print(f"{name:22s} loop {t_loop:6.2f} s  batched {t_batched:6.2f} s  speed-up {t_loop / t_batched:.2f}x  max |dE| {err:.1e} eV; "
              f"model alone on prebuilt batches {t_model:.2f} s: ceiling {t_loop / t_model:.2f}x")
        report["models"][name] = {"loop_s": round(t_loop, 3), "batched_s": round(t_batched, 3), "speedup": round(t_loop / t_batched, 2),
                                  "model_only_s": round(t_model, 3), "speedup_ceiling": round(t_loop / t_model, 2),
                                  "max_abs_dE": err}  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


def model_only_seconds(predictor, frames: list[dict], batch_size: int) -> float:
    """`Potential` with forces and stress on PyG batches built beforehand, as `MatglPredictor` builds them."""
    import torch
    from torch_geometric.data import Batch

    from xtalbench.core.schema import to_atoms

    batches = []
    for start in range(0, len(frames), batch_size):
        graphs = [predictor.converter.get_graph(to_atoms(f, with_labels=False)) for f in frames[start : start + batch_size]]
        lattices = torch.cat([torch.as_tensor(lattice, dtype=torch.float32).reshape(1, 3, 3) for _, lattice, _ in graphs])
        batches.append((Batch.from_data_list([graph for graph, _, _ in graphs]), lattices))
    t0 = time.perf_counter()
    for batch, lattices in batches:
        forces = predictor.potential(batch.to(predictor.device), lattices.to(predictor.device), None)[1]
        forces.cpu()  # waits for the device, as a prediction does
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
