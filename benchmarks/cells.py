"""The small periodic cells the batching benchmarks time (MP-20 sizes), shared by every model environment."""

from __future__ import annotations

import numpy as np


def structures(n: int, seed: int = 0, elements: tuple[int, ...] = (32, 51, 52)) -> list[dict]:
    """Rock-salt-like cells of 2-16 atoms (a = 6 Å: ~18 neighbours within 5 Å), random species of `elements`."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        # MP-20-like sizes: 2-atom primitive, 4-atom (1x1x2 primitive), 8-atom cubic and 16-atom cells
        kind = i % 4
        cubic = kind >= 2
        reps = [(1, 1, 1), (1, 1, 2), (1, 1, 1), (1, 1, 2)][kind]
        atoms = bulk("NaCl", "rocksalt", a=6.0, cubic=cubic).repeat(reps)
        numbers = rng.choice(list(elements), size=len(atoms))
        positions = atoms.positions + rng.normal(0, 0.1, atoms.positions.shape)
        frames.append({"frame_id": f"s{i}", "nsites": len(atoms), "numbers": numbers.tolist(), "positions": positions.ravel().tolist(),
                       "lattice": atoms.cell.array.ravel().tolist(), "pbc": [True, True, True]})  # fmt: skip
    return frames
