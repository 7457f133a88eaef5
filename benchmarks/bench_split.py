"""Benchmark the split stage on synthetic feature vectors.

100,000 frames (2 frames per material by default) drawn from a Gaussian mixture in `--width`
dimensions (default 1,024 float32 columns: 0.4 GB; a real mu1nu1 SOAP of 20 species is 8,960
wide, see `--width`), through every strategy and the split card, with the Nyström kernel map.
Then the exact-vs-Nyström ratio on a subset small enough for exact kernel PCA: time and the
agreement of the LOCO clusters (adjusted Rand index).

    .venv/bin/python benchmarks/bench_split.py [--rows 100000] [--width 1024] [--exact-rows 4000]

Targets (issue 4): 100,000 rows in < 5 min and < 8 GB peak memory.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd


def synthetic(rows: int, width: int, frames_per_material: int, seed: int = 0):
    from xtalbench.split import SplitData

    rng = np.random.default_rng(seed)
    n_materials = rows // frames_per_material
    centres = rng.normal(0, 3, (8, width)).astype(np.float32)
    family = rng.integers(0, 8, n_materials)
    X = np.repeat(centres[family], frames_per_material, axis=0)
    X += rng.normal(0, 1, X.shape).astype(np.float32)
    X = np.abs(X)  # SOAP entries are non-negative
    mats = np.repeat(np.arange(n_materials), frames_per_material)
    elements = np.array(["Li", "O", "S", "Fe", "Si", "Mg", "Al", "Cu"])
    meta = pd.DataFrame(
        {
            "frame_id": [f"f{i:07d}" for i in range(len(X))],
            "material_id": [f"m{m:07d}" for m in mats],
            "elements": [list(elements[[f, (f + 3) % 8]]) for f in family[mats]],
            "spacegroup": rng.integers(1, 231, n_materials)[mats],
            "formation_energy_per_atom": rng.normal(-1, 1, n_materials)[mats],
            "frame_index": np.tile(np.arange(frames_per_material), n_materials),
        }
    )
    return SplitData(meta, X), family


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--frames-per-material", type=int, default=2)
    parser.add_argument("--exact-rows", type=int, default=4000)
    args = parser.parse_args()

    from sklearn.metrics import adjusted_rand_score

    from xtalbench.split import build_splits
    from xtalbench.split.card import build_card

    params = {
        "seed": 0,
        "strategies": ["loco", "random", "element", "spacegroup", "forward"],
        "loco": {"k": 5, "n_components": 10, "exact_max_rows": 5000, "n_landmarks": 1000, "min_cluster_fraction": 0.02},
        "element": {"elements": ["Li", "O", "S"]},
        "forward": {"properties": ["formation_energy_per_atom"], "k": 5},
        "card": {"max_rows": 20000},
    }
    data, _ = synthetic(args.rows, args.width, args.frames_per_material)
    print(f"synthetic: {data.n_frames} frames, {data.n_materials} materials, width {args.width} "
          f"({data.features.nbytes / 1e9:.2f} GB float32); peak so far {peak_gb():.2f} GB")
    start = time.perf_counter()
    run = build_splits(data, params)
    t_split = time.perf_counter() - start
    card = build_card("bench", data, run, params)
    t_total = time.perf_counter() - start
    print(f"full split ({run.embedding['method']}): splits {t_split:.1f} s, + card {t_total - t_split:.1f} s = "
          f"{t_total:.1f} s (target < 300 s); peak RSS {peak_gb():.2f} GB (target < 8 GB)")
    print(f"  loco cluster sizes: {run.results['loco'].info['cluster_sizes']}")
    print(f"  loco outside-domain fractions: "
          f"{[f['kpca_distance']['fraction_test_outside_domain'] for f in card['strategies']['loco']['folds'].values()]}")

    # exact vs Nystroem on a subset that exact kernel PCA can take
    small, family = synthetic(args.exact_rows, args.width, 1, seed=1)
    times, labels = {}, {}
    for name, exact_max in (("exact", 10**9), ("nystroem", 0)):
        p = {**params, "strategies": ["loco"], "loco": {**params["loco"], "exact_max_rows": exact_max}}
        t0 = time.perf_counter()
        r = build_splits(small, p)
        times[name] = time.perf_counter() - t0
        labels[name] = r.results["loco"].cluster
        print(f"  {args.exact_rows} rows {name:9s}: {times[name]:.1f} s ({r.embedding['method']})")
    print(f"exact / nystroem time ratio: {times['exact'] / times['nystroem']:.2f}x; "
          f"cluster agreement (ARI) {adjusted_rand_score(labels['exact'], labels['nystroem']):.3f}")


if __name__ == "__main__":
    main()
