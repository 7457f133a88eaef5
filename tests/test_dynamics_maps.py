"""Configuration maps: kernel properties, overlap shares of identical and disjoint trajectories, the PNG."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from xtalbench.dynamics.maps import (
    MapError,
    configuration_map,
    frame_kernel,
    map_png,
    overlap,
)


def rattled(n: int, scale: float, seed: int, a: float = 4.2):
    base = bulk("MgO", "rocksalt", a=a, cubic=True)
    out = []
    for i in range(n):
        atoms = base.copy()
        atoms.rattle(scale, seed=seed + i)
        out.append(atoms)
    return out


def test_overlap_of_disjoint_and_identical_trajectories(tmp_path):
    near = rattled(8, 0.02, 0)
    far = rattled(8, 0.02, 100, a=3.6)  # a compressed lattice: other environments
    result = configuration_map({"a": near, "a_copy": [f.copy() for f in near], "compressed": far}, {"a": np.linspace(0, 1, 8)}, r_cut=4.0, n_max=4, l_max=3)
    share = result["overlap"]
    assert share["a"]["a_copy"] == 1.0 and share["a_copy"]["a"] == 1.0
    assert share["a"]["compressed"] == 0.0 and share["compressed"]["a"] == 0.0
    assert result["embedding"].shape == (24, 2)
    assert np.isnan(result["sigma"][8:]).all() and result["sigma"][7] == 1.0
    png = map_png(tmp_path / "map.png", result, "MgO")
    assert png.stat().st_size > 1000


def test_kernel_is_normalised_and_overlap_by_hand():
    k = frame_kernel(rattled(3, 0.05, 1), r_cut=4.0, n_max=4, l_max=3)
    assert np.diag(k) == pytest.approx(1.0) and (k <= 1.0 + 1e-12).all() and k == pytest.approx(k.T)
    # hand-made kernel: frames 0,1 (source x) at distance 0.2 apart; frame 2 (y) alone with frame 3 (y) near frame 0
    d = np.array([[0, 0.2, 1.0, 0.1], [0.2, 0, 1.0, 0.3], [1.0, 1.0, 0, 0.5], [0.1, 0.3, 0.5, 0]])
    share = overlap(1 - d**2 / 2, np.array(["x", "x", "y", "y"]), support_quantile=1.0)
    # x's support radius = 0.2 (its nearest-neighbour distance); y's = 0.5.
    assert share["y"]["x"] == 0.5  # frame 3 is 0.1 from frame 0; frame 2 is 1.0 away
    assert share["x"]["y"] == 1.0  # frames 0, 1 are 0.1 and 0.3 from frame 3 (≤ 0.5)
    assert share["x"]["x"] == 1.0 and share["y"]["y"] == 1.0


def test_maps_need_two_trajectories_with_two_frames():
    with pytest.raises(MapError, match="two trajectories"):
        configuration_map({"a": rattled(3, 0.02, 0)})
    with pytest.raises(MapError, match="fewer than two frames"):
        configuration_map({"a": rattled(3, 0.02, 0), "b": rattled(1, 0.02, 5)}, r_cut=4.0, n_max=3, l_max=2)
    with pytest.raises(MapError, match="kernel"):
        frame_kernel(rattled(2, 0.02, 0), kernel="cosine")
