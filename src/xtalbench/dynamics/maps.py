"""Configuration maps: SOAP of the frames of several trajectories, one kernel-PCA, and their overlap.

Kernel between two frames (`kernel`):
- `average` (default): the average kernel, i.e. the normalised dot product of the structure-averaged
  SOAP vectors (= the mean of the linear kernel over all pairs of atomic environments);
- `rematch`: dscribe's REMatch kernel (regularised best matching of environments; slower).
Distances are the kernel-induced d(a, b) = sqrt(2 − 2 k(a, b)) of the normalised kernel. Overlap:
the share of trajectory A's frames that lie within trajectory B's support, i.e. closer to some
B frame than B's own `support_quantile` nearest-neighbour distance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xtalbench.core.errors import XtalbenchError


class MapError(XtalbenchError, ValueError):
    """Trajectories that cannot be mapped together (fewer than two, or too few frames)."""


def frame_kernel(frames: Sequence[Any], kernel: str = "average", r_cut: float = 5.0, n_max: int = 6, l_max: int = 4, rematch_alpha: float = 1.0) -> np.ndarray:
    """Normalised frame-by-frame kernel matrix (n, n), k(a, a) = 1."""
    species = sorted({int(z) for f in frames for z in f.numbers})
    if kernel == "average":
        from xtalbench.descriptors.soap import SoapFeaturizer

        x = SoapFeaturizer(species=species, r_cut=r_cut, n_max=n_max, l_max=l_max, compression="off", dtype="float64").fit_transform(frames)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        k = x @ x.T
    elif kernel == "rematch":
        from dscribe.descriptors import SOAP
        from dscribe.kernels import REMatchKernel
        from sklearn.preprocessing import normalize

        soap = SOAP(species=species, r_cut=r_cut, n_max=n_max, l_max=l_max, periodic=True, sparse=False)
        local = [normalize(soap.create(f)) for f in frames]
        k = REMatchKernel(metric="linear", alpha=rematch_alpha, threshold=1e-6).create(local)
    else:
        raise MapError(f"kernel {kernel!r}: expected average or rematch")
    return np.clip((k + k.T) / 2, -1.0, 1.0)


def kernel_pca(k: np.ndarray, n_components: int = 2) -> np.ndarray:
    """Kernel-PCA of a precomputed kernel (dense solver; each component's sign fixed: largest |value| positive)."""
    from sklearn.decomposition import KernelPCA

    emb = KernelPCA(n_components=n_components, kernel="precomputed", eigen_solver="dense").fit_transform(k)
    for j in range(emb.shape[1]):
        if emb[np.argmax(np.abs(emb[:, j])), j] < 0:
            emb[:, j] = -emb[:, j]
    return emb


def overlap(k: np.ndarray, labels: np.ndarray, support_quantile: float = 0.95) -> dict[str, dict[str, float]]:
    """share[a][b]: fraction of a's frames within b's support (see the module docstring)."""
    d = np.sqrt(np.clip(2.0 - 2.0 * k, 0.0, None))
    names = sorted(set(labels.tolist()))
    share: dict[str, dict[str, float]] = {a: {} for a in names}
    for b in names:
        inside_b = labels == b
        if inside_b.sum() < 2:
            raise MapError(f"trajectory {b!r} has fewer than two frames: no support to measure")
        own = d[np.ix_(inside_b, inside_b)].copy()
        np.fill_diagonal(own, np.inf)
        radius = float(np.quantile(own.min(axis=1), support_quantile))
        for a in names:
            rows = labels == a
            near = d[np.ix_(rows, inside_b)]
            if a == b:
                near = own
            share[a][b] = float((near.min(axis=1) <= radius + 1e-12).mean())
    return share


def configuration_map(trajectories: Mapping[str, Sequence[Any]], sigma: Mapping[str, Sequence[float]] | None = None, kernel: str = "average",
                      support_quantile: float = 0.95, **soap: Any) -> dict[str, Any]:  # fmt: skip
    """SOAP kernel-PCA map of ≥ 2 trajectories: embedding, source labels, σ⁽²⁾ per frame and overlap shares."""
    if len(trajectories) < 2:
        raise MapError(f"a configuration map needs two trajectories or more, got {len(trajectories)}")
    frames: list[Any] = []
    labels: list[str] = []
    values: list[float] = []
    for name, traj in trajectories.items():
        frames += list(traj)
        labels += [name] * len(traj)
        s = (sigma or {}).get(name)
        values += list(s) if s is not None else [float("nan")] * len(traj)
    k = frame_kernel(frames, kernel, **soap)
    lab = np.asarray(labels)
    return {"embedding": kernel_pca(k), "labels": lab, "sigma": np.asarray(values, dtype=float), "overlap": overlap(k, lab, support_quantile), "kernel": kernel}


def map_png(path: Path, result: dict[str, Any], title: str) -> Path:
    """Map coloured by source, by σ⁽²⁾(t), and the overlap shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    emb, lab, sig = result["embedding"], result["labels"], result["sigma"]
    names = sorted(result["overlap"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for name in names:
        m = lab == name
        axes[0].scatter(emb[m, 0], emb[m, 1], s=10, label=name)
    axes[0].legend(fontsize=8)
    axes[0].set_title(f"{title}: by source")
    ok = np.isfinite(sig)
    scatter = axes[1].scatter(emb[ok, 0], emb[ok, 1], c=sig[ok], s=10, cmap="viridis")
    fig.colorbar(scatter, ax=axes[1], label="σ⁽²⁾(t)")
    axes[1].set_title("by σ⁽²⁾(t)")
    for ax in axes[:2]:
        ax.set_xlabel("kPC 1")
        ax.set_ylabel("kPC 2")
    share = np.array([[result["overlap"][a][b] for b in names] for a in names])
    axes[2].imshow(share, vmin=0, vmax=1, cmap="Blues")
    axes[2].set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    axes[2].set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(names)):
        for j in range(len(names)):
            axes[2].text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=8)
    axes[2].set_title("share of row's frames in column's support")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path
