"""Benchmark: exact MD-HIT greedy dedup on an index vs the naive loop (issue 3).

On the 84,295 MP compositions of ../shared/data/mp-compositions/mp-formation.csv.gz, ElMD on
the mendeleev and mod_petti scales, thresholds 0.5, 1, 2, MD-HIT order (ascending atoms in the
reduced formula, ties by task_id):
- a 5,000-row sample: kept sets (and representatives) identical to the naive greedy; time
  against two naive baselines measured in the same run: MD-HIT's double loop (one distance per
  (candidate, kept) pair; target >= 50x) and a vectorised naive (one numpy call per candidate);
- all 84,295 rows: time (target < 60 s) and peak resident memory (target < 4 GB).

Run: .venv/bin/python benchmarks/bench_dedup.py [--sample 5000] [--skip-pair-loop]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from xtalbench.dedup.stage import greedy_select, pair_distances
from xtalbench.descriptors.composition import CompositionFeaturizer, parse_formula

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mp-compositions" / "mp-formation.csv.gz"
THRESHOLDS = (0.5, 1.0, 2.0)
SCALES = ("mendeleev", "mod_petti")


def naive_pair_loop(X: np.ndarray, threshold: float, order: np.ndarray) -> np.ndarray:
    """MD-HIT's reference: a Python double loop, one numpy distance per (candidate, kept) pair."""
    kept: list[int] = []
    for i in order:
        best = np.inf
        xi = X[i]
        for j in kept:
            d = float(pair_distances(xi, X[j], "manhattan"))
            if d < best:
                best = d
        if best > threshold:
            kept.append(int(i))
    mask = np.zeros(len(X), dtype=bool)
    mask[kept] = True
    return mask


def naive_vectorised(X: np.ndarray, threshold: float, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stronger naive baseline: each candidate against all kept rows in one numpy call."""
    kept: list[int] = []
    rep = np.arange(len(X))
    store = np.empty_like(X)
    for i in order:
        if kept:
            d = pair_distances(X[i], store[: len(kept)], "manhattan")
            k = int(np.argmin(d))
            if d[k] <= threshold:
                rep[i] = kept[k]
                continue
        store[len(kept)] = X[i]
        kept.append(int(i))
    mask = np.zeros(len(X), dtype=bool)
    mask[kept] = True
    return mask, rep


def md_hit_order(formulas: list[str], ids: list[str]) -> np.ndarray:
    from functools import reduce
    from math import gcd

    natoms = []
    for f in formulas:
        counts = parse_formula(f).values()
        if all(float(c).is_integer() for c in counts):
            ints = [int(c) for c in counts]
            natoms.append(sum(ints) // reduce(gcd, ints))
        else:
            natoms.append(sum(counts))
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.argsort(np.asarray(ids), kind="stable")] = np.arange(len(ids))
    return np.lexsort((rank, np.asarray(natoms, dtype=np.float64)))


def main() -> None:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=5000)
    parser.add_argument("--skip-pair-loop", action="store_true", help="skip the slow MD-HIT double-loop baseline")
    args = parser.parse_args()
    frame = pd.read_csv(DATA, keep_default_na=False)
    formulas, ids = frame["composition"].tolist(), frame["task_id"].tolist()
    print(f"{len(formulas)} compositions")
    order_full = md_hit_order(formulas, ids)
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(len(formulas), args.sample, replace=False))
    order_sample = md_hit_order([formulas[i] for i in sample], [ids[i] for i in sample])

    full_rows, sample_rows = [], []
    for scale in SCALES:
        t0 = time.perf_counter()
        X = CompositionFeaturizer(kind=f"elmd_{scale}", dtype="float64").transform(formulas)
        t_feat = time.perf_counter() - t0
        for threshold in THRESHOLDS:
            t0 = time.perf_counter()
            result = greedy_select(X, threshold, "manhattan", order_full)
            t_full = time.perf_counter() - t0
            full_rows.append((scale, threshold, result.n_kept, t_feat, t_full))
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        Xs = np.ascontiguousarray(X[sample])
        for threshold in THRESHOLDS:
            t0 = time.perf_counter()
            ours = greedy_select(Xs, threshold, "manhattan", order_sample)
            t_ours = time.perf_counter() - t0
            t0 = time.perf_counter()
            vec_kept, vec_rep = naive_vectorised(Xs, threshold, order_sample)
            t_vec = time.perf_counter() - t0
            same = bool((vec_kept == ours.kept).all() and (vec_rep == ours.representative).all())
            t_pair = float("nan")
            if not args.skip_pair_loop:
                t0 = time.perf_counter()
                pair_kept = naive_pair_loop(Xs, threshold, order_sample)
                t_pair = time.perf_counter() - t0
                same = same and bool((pair_kept == ours.kept).all())
            sample_rows.append((scale, threshold, ours.n_kept, same, t_ours, t_pair, t_vec))

    print(f"\n{args.sample}-row sample (same kept set and representatives as the naive greedy?)")
    print(f"{'scale':10} {'thr':>4} {'kept':>6} {'same':>5} {'ours s':>8} {'pair-loop s':>11} {'x':>7} {'vector s':>9} {'x':>6}")
    for scale, thr, kept, same, t_ours, t_pair, t_vec in sample_rows:
        print(f"{scale:10} {thr:4.1f} {kept:6d} {str(same):>5} {t_ours:8.3f} {t_pair:11.2f} {t_pair / t_ours:7.0f} {t_vec:9.2f} {t_vec / t_ours:6.1f}")
    print(f"\nall {len(formulas)} rows (features computed once per scale)")
    print(f"{'scale':10} {'thr':>4} {'kept':>6} {'features s':>10} {'greedy s':>9} {'total s':>8}")
    for scale, thr, kept, t_feat, t_full in full_rows:
        print(f"{scale:10} {thr:4.1f} {kept:6d} {t_feat:10.2f} {t_full:9.2f} {t_feat + t_full:8.2f}")
    print(f"\npeak resident memory after the full runs: {peak_gb:.2f} GB (target < 4 GB)")


if __name__ == "__main__":
    main()
