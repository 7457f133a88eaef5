"""Batched inference vs a per-structure ASE-calculator loop, and a model worker vs in-process, on CPU.

Same structures for every row (random rock-salt-like Ge/Sb/Te cells of 2-16 atoms, the size range
of MP-20), energy, forces and stress from each, every ratio measured in this one run:

1. MACE (../shared/data/models/mace_swa_GeSbTe.model): batched `MacePredictor` vs a per-structure
   `MACECalculator` loop (target >= 3x);
2. CHGNet 0.3.0: batched `ChgnetPredictor` (`--chgnet-batch`) vs a per-structure `CHGNetCalculator`
   loop (target >= 3x);
3. CHGNet in a worker process (`EnvPredictor`, Arrow IPC over pipes; here with this environment's
   interpreter, so only the worker's cost differs) vs the same `ChgnetPredictor` in-process, same
   batch size (target: < 10 % throughput lost).

    .venv/bin/python benchmarks/bench_inference.py [--n 200] [--batch-size 32] [--dtype float32] [--skip mace,chgnet,worker]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
import mace  # noqa: F401
import numpy as np
import torch

MODEL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "models" / "mace_swa_GeSbTe.model"


def structures(n: int, seed: int = 0) -> list[dict]:
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        # MP-20-like sizes: 2-atom primitive, 4-atom (1x1x2 primitive), 8-atom cubic and 16-atom cells
        kind = i % 4
        cubic = kind >= 2
        reps = [(1, 1, 1), (1, 1, 2), (1, 1, 1), (1, 1, 2)][kind]
        atoms = bulk("NaCl", "rocksalt", a=6.0, cubic=cubic).repeat(reps)
        numbers = rng.choice([32, 51, 52], size=len(atoms))
        positions = atoms.positions + rng.normal(0, 0.1, atoms.positions.shape)
        frames.append({"frame_id": f"s{i}", "nsites": len(atoms), "numbers": numbers.tolist(), "positions": positions.ravel().tolist(),
                       "lattice": atoms.cell.array.ravel().tolist(), "pbc": [True, True, True]})  # fmt: skip
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--chgnet-n", type=int, default=96)
    parser.add_argument("--chgnet-batch", type=int, default=16)
    parser.add_argument("--worker-repeats", type=int, default=6)
    parser.add_argument("--skip", default="", help="comma-separated: mace, chgnet, worker")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    results: dict = {"torch_threads": torch.get_num_threads()}
    if "mace" not in skip:
        results["mace"] = bench_mace(args)
    if "chgnet" not in skip or "worker" not in skip:
        results.update(bench_chgnet(args, skip))
    if args.out:
        import json

        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


def _rate(n: int, atoms: int, seconds: float) -> str:
    return f"{n / seconds:8.1f} structures/s  {atoms / seconds:9.1f} atoms/s  ({seconds:.2f} s)"


def bench_chgnet(args, skip: set[str]) -> dict:
    """CHGNet: batched vs CHGNetCalculator loop; worker vs in-process (same batch size)."""
    import sys

    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    from xtalbench.core.schema import to_atoms
    from xtalbench.models import load_spec
    from xtalbench.models.chgnet import ChgnetPredictor
    from xtalbench.models.worker import EnvPredictor

    frames = structures(args.chgnet_n, seed=1)
    n, n_atoms = len(frames), sum(f["nsites"] for f in frames)
    out: dict = {}
    local = ChgnetPredictor(progress=False)
    local.predict(frames[:8], batch_size=args.chgnet_batch)  # warm-up
    t0 = time.perf_counter()
    batched = local.predict(frames, batch_size=args.chgnet_batch)
    t_batched = time.perf_counter() - t0
    print(f"CHGNet, {n} structures, {n_atoms} atoms, batch {args.chgnet_batch}")
    print(f"  batched ChgnetPredictor (in-process): {_rate(n, n_atoms, t_batched)}")
    if "chgnet" not in skip:
        calc = CHGNetCalculator(model=CHGNet.load(verbose=False), use_device="cpu")
        for f in frames[:4]:
            a = to_atoms(f, with_labels=False)
            a.calc = calc
            a.get_stress()
        t0 = time.perf_counter()
        energies = []
        for f in frames:
            atoms = to_atoms(f, with_labels=False)
            atoms.calc = calc
            energies.append(atoms.get_potential_energy())
            atoms.get_forces()
            atoms.get_stress()
        t_loop = time.perf_counter() - t0
        err = float(np.abs(np.asarray(energies) - batched["energy"]).max())
        print(f"  per-structure CHGNetCalculator loop  : {_rate(n, n_atoms, t_loop)}")
        print(f"  speed-up: {t_loop / t_batched:.2f}x (target >= 3x); max |dE| {err:.2e} eV ({'ok' if err < 1e-3 else 'MISMATCH'})")
        out["chgnet"] = {"structures": n, "atoms": n_atoms, "batch_size": args.chgnet_batch, "loop_s": round(t_loop, 3),
                         "batched_s": round(t_batched, 3), "speedup": round(t_loop / t_batched, 2), "max_abs_dE": err}  # fmt: skip
    if "worker" not in skip:
        worker = EnvPredictor(load_spec("chgnet"), python=sys.executable, progress=False)
        worker.predict(frames[:8], batch_size=args.chgnet_batch)  # warm-up
        # interleaved pairs in ABBA order (a busy machine's drift hits both sides alike); the
        # figure is the median over pairs of worker time / in-process time
        t_local, t_worker, t_inside = [], [], []
        for rep in range(args.worker_repeats):
            order = ("local", "worker") if rep % 2 == 0 else ("worker", "local")
            for side in order:
                t0 = time.perf_counter()
                if side == "local":
                    local.predict(frames, batch_size=args.chgnet_batch)
                    t_local.append(time.perf_counter() - t0)
                else:
                    remote = worker.predict(frames, batch_size=args.chgnet_batch)
                    t_worker.append(time.perf_counter() - t0)
                    t_inside.append(worker.last_seconds[1])  # the model's own time inside the worker
        worker.close()
        err = float(np.abs(remote["energy"] - batched["energy"]).max())
        overhead = float(np.median(np.asarray(t_worker) / np.asarray(t_local))) - 1
        best = min(t_worker) / min(t_local) - 1
        print(f"  in-process (best of {args.worker_repeats})               : {_rate(n, n_atoms, min(t_local))}")
        print(f"  worker process, Arrow IPC (best of {args.worker_repeats}): {_rate(n, n_atoms, min(t_worker))}")
        ipc = (sum(t_worker) - sum(t_inside)) / sum(t_inside)
        print(f"  worker round trip minus the model's time inside it (framing, Arrow, pipes): {100 * ipc:+.2f}% "
              f"({(sum(t_worker) - sum(t_inside)) / len(t_worker) * 1000:.1f} ms per call of {n} structures)")
        print(f"  worker overhead: {100 * overhead:+.1f}% time, median of {args.worker_repeats} interleaved pairs "
              f"({100 * best:+.1f}% best vs best; target < 10%); max |dE| worker vs in-process {err:.2e} eV")
        out["worker"] = {"structures": n, "batch_size": args.chgnet_batch, "in_process_s": [round(t, 3) for t in t_local],
                         "worker_s": [round(t, 3) for t in t_worker], "overhead": round(overhead, 4), "overhead_best": round(best, 4),
                         "ipc_overhead": round(ipc, 5), "worker_inside_s": [round(t, 3) for t in t_inside],
                         "max_abs_dE": err}  # fmt: skip
    return out


def bench_mace(args) -> dict:

    from mace.calculators import MACECalculator

    from xtalbench.core.schema import to_atoms
    from xtalbench.models.mace import MacePredictor

    frames = structures(args.n)
    n_atoms = sum(f["nsites"] for f in frames)
    batched = MacePredictor.from_file(MODEL, device="cpu", dtype=args.dtype, progress=False)
    calc = MACECalculator(model_paths=str(MODEL), device="cpu", default_dtype=args.dtype)
    batched.predict(frames[:8], batch_size=args.batch_size)  # warm-up both
    for f in frames[:4]:
        a = to_atoms(f, with_labels=False)
        a.calc = calc
        a.get_stress()

    t0 = time.perf_counter()
    out = batched.predict(frames, batch_size=args.batch_size)
    t_batched = time.perf_counter() - t0

    t0 = time.perf_counter()
    energies, stresses = [], []
    for f in frames:
        atoms = to_atoms(f, with_labels=False)
        atoms.calc = calc
        energies.append(atoms.get_potential_energy())
        atoms.get_forces()
        stresses.append(atoms.get_stress())
    t_loop = time.perf_counter() - t0

    err = float(np.abs(np.asarray(energies) - out["energy"]).max())
    tol = 1e-3 if args.dtype == "float32" else 1e-8
    print(f"{args.n} structures, {n_atoms} atoms, dtype {args.dtype}, batch {args.batch_size}, torch threads {torch.get_num_threads()}")
    print(f"per-structure MACECalculator loop: {args.n / t_loop:8.1f} structures/s  {n_atoms / t_loop:9.1f} atoms/s  ({t_loop:.2f} s)")
    print(f"batched MacePredictor            : {args.n / t_batched:8.1f} structures/s  {n_atoms / t_batched:9.1f} atoms/s  ({t_batched:.2f} s)")
    print(f"speed-up: {t_loop / t_batched:.2f}x (target >= 3x); max |dE| {err:.2e} eV ({'ok' if err < tol else 'MISMATCH'})")
    return {"structures": args.n, "atoms": n_atoms, "batch_size": args.batch_size, "dtype": args.dtype, "loop_s": round(t_loop, 3),
            "batched_s": round(t_batched, 3), "speedup": round(t_loop / t_batched, 2), "max_abs_dE": err}  # fmt: skip


if __name__ == "__main__":
    main()
