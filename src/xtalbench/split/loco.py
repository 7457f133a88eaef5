"""Leave-one-cluster-out on the kernel-PCA map: KMeans(k) on material coordinates.

Clusters are relabelled by size (0 = largest, ties by first material) so labels do not depend
on KMeans' arbitrary numbering. Clusters holding fewer than `min_cluster_fraction` of the
frames are merged, smallest first, into the cluster with the nearest centroid; each merge is
reported. Fold i tests cluster i.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xtalbench.core.errors import XtalbenchError
from xtalbench.split.common import StrategyResult, hold_out
from xtalbench.split.data import SplitData


def material_means(data: SplitData, frame_coords: np.ndarray) -> np.ndarray:
    """Mean frame coordinates per material."""
    sums = np.zeros((data.n_materials, frame_coords.shape[1]))
    np.add.at(sums, data.material_of_frame, frame_coords)
    return sums / data.frame_counts()[:, None]


def relabel_by_size(labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Labels 0..k-1 ordered by total weight (descending), ties by first occurrence."""
    uniq, first = np.unique(labels, return_index=True)
    sizes = np.array([weights[labels == u].sum() for u in uniq])
    order = np.lexsort((first, -sizes))
    mapping = np.empty(uniq.max() + 1, dtype=np.int64)
    mapping[uniq[order]] = np.arange(len(uniq))
    return mapping[labels]


def merge_small(labels: np.ndarray, coords: np.ndarray, weights: np.ndarray, min_size: float) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Merge clusters lighter than `min_size` into the nearest centroid (at least 2 clusters stay)."""
    labels = labels.copy()
    merges = []
    while True:
        uniq = np.unique(labels)
        if len(uniq) <= 2:
            break
        sizes = np.array([weights[labels == u].sum() for u in uniq])
        small = int(np.argmin(sizes))  # argmin takes the first (lowest label) on ties
        if sizes[small] >= min_size:
            break
        centroids = np.array([np.average(coords[labels == u], axis=0, weights=weights[labels == u]) for u in uniq])
        d = np.linalg.norm(centroids - centroids[small], axis=1)
        d[small] = np.inf
        target = int(np.argmin(d))
        merges.append({"cluster": int(uniq[small]), "size": int(sizes[small]), "into": int(uniq[target]), "centroid_distance": float(d[target])})
        labels[labels == uniq[small]] = uniq[target]
    return labels, merges


def loco_split(data: SplitData, frame_coords: np.ndarray, params: dict[str, Any], seed: int) -> StrategyResult:
    from sklearn.cluster import KMeans

    coords = material_means(data, frame_coords)
    weights = data.frame_counts().astype(float)
    k = int(params.get("k", 5))
    if data.n_materials < k:
        raise XtalbenchError(f"split loco: k={k} clusters but only {data.n_materials} materials")
    kmeans = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(coords)
    labels = relabel_by_size(kmeans.labels_, weights)
    raw_sizes = np.bincount(labels, weights=weights, minlength=k).astype(int).tolist()
    fraction = float(params.get("min_cluster_fraction", 0.0) or 0.0)
    labels, merges = merge_small(labels, coords, weights, fraction * weights.sum())
    labels = relabel_by_size(labels, weights)
    n_clusters = int(labels.max()) + 1
    rng = np.random.default_rng(seed)
    val_fraction = float(params.get("val_fraction", 0.1))
    folds = [hold_out(data.n_materials, labels == c, val_fraction, rng, f"cluster {c}") for c in range(n_clusters)]
    sizes = np.bincount(labels, weights=weights, minlength=n_clusters).astype(int)
    info = {
        "k": k,
        "n_clusters": n_clusters,
        "kmeans_cluster_sizes": raw_sizes,
        "cluster_sizes": sizes.tolist(),
        "cluster_fractions": [round(float(s / weights.sum()), 4) for s in sizes],
        "min_cluster_fraction": fraction,
        "merged": merges,
        "clustered_on": "mean kernel-PCA coordinates of each material's frames",
    }
    return StrategyResult("loco", folds, cluster=labels.astype(np.int64), info=info)
