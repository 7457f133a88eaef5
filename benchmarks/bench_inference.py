"""Batched MACE inference vs a per-structure MACECalculator loop, side by side, on CPU.

Same model (../shared/data/models/mace_swa_GeSbTe.model), same structures (random rock-salt-like
Ge/Sb/Te cells of 2-16 atoms, the size range of MP-20), same dtype; energy, forces and stress from both. Prints
structures/s of each and the ratio (target >= 3x), and checks the numbers agree.

    .venv/bin/python benchmarks/bench_inference.py [--n 200] [--batch-size 32] [--dtype float32]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
import mace  # noqa: E402,F401
import numpy as np  # noqa: E402
import torch  # noqa: E402

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
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
