"""Tests of the MD-HIT greedy filter (`xtalbench.dedup.stage`) and the dedup stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xtalbench.core.errors import MissingInputError
from xtalbench.core.project import write_parquet
from xtalbench.core.schema import FRAMES_SCHEMA, frames_table, make_frame
from xtalbench.dedup.stage import (
    DEFAULT_EPSILON,
    dataset_config,
    greedy_select,
    pair_distances,
    run_dedup,
    visit_order,
)


def naive_greedy(X: np.ndarray, threshold: float, metric: str, order: np.ndarray, epsilon: float = DEFAULT_EPSILON):
    """MD-HIT's reference loop: every candidate against every kept row, one pair at a time;
    dropped iff the nearest kept row is at distance <= threshold + epsilon."""
    kept: list[int] = []
    rep = np.arange(len(X))
    dist = np.zeros(len(X))
    for i in order:
        best, best_j = np.inf, -1
        for j in kept:
            d = float(pair_distances(X[i], X[j], metric))
            if d < best:
                best, best_j = d, j
        if best <= threshold + epsilon:
            rep[i], dist[i] = best_j, best
        else:
            kept.append(int(i))
    mask = np.zeros(len(X), dtype=bool)
    mask[kept] = True
    return mask, rep, dist


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 120),
    d=st.integers(1, 20),
    levels=st.integers(2, 6),
    threshold=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5]),
    metric=st.sampled_from(["manhattan", "euclidean"]),
    seed=st.integers(0, 2**31 - 1),
    block=st.sampled_from([1, 7, 32]),
)
def test_greedy_equals_naive(n, d, levels, threshold, metric, seed, block):
    rng = np.random.default_rng(seed)
    # few distinct coordinate values → many exact ties at the threshold
    X = rng.integers(0, levels, size=(n, d)) / (levels - 1) * 2
    order = rng.permutation(n)
    got = greedy_select(X, threshold, metric, order, block_size=block, buffer_size=4)
    kept, rep, dist = naive_greedy(X, threshold, metric, order)
    np.testing.assert_array_equal(got.kept, kept)
    np.testing.assert_array_equal(got.representative, rep)
    np.testing.assert_array_equal(got.distance, dist)


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MP_FORMATION = SHARED / "mp-compositions" / "mp-formation.csv.gz"


@pytest.fixture(scope="module")
def mp_formulas() -> list[str]:
    if not MP_FORMATION.exists():
        pytest.skip("shared MP composition data not available")
    import pandas as pd

    frame = pd.read_csv(MP_FORMATION, keep_default_na=False)
    return frame["composition"].tolist()


@pytest.mark.parametrize("kind", ["elmd_mod_petti", "elmd_mendeleev"])
def test_greedy_equals_naive_on_real_compositions(mp_formulas, kind):
    from xtalbench.descriptors.composition import CompositionFeaturizer

    rng = np.random.default_rng(7)
    sample = [mp_formulas[i] for i in rng.choice(len(mp_formulas), 600, replace=False)]
    X = CompositionFeaturizer(kind=kind, dtype="float64").transform(sample)
    order = np.argsort([len(f) for f in sample], kind="stable")
    for threshold in (0.5, 2.0):
        got = greedy_select(X, threshold, "manhattan", order, block_size=64, buffer_size=32)
        kept, rep, dist = naive_greedy(X, threshold, "manhattan", order)
        assert 0 < got.n_kept < len(sample)
        np.testing.assert_array_equal(got.kept, kept)
        np.testing.assert_array_equal(got.representative, rep)
        np.testing.assert_array_equal(got.distance, dist)


def test_threshold_is_inclusive():
    X = np.array([[0.0], [1.0], [2.5]])
    at = greedy_select(X, 1.0, "manhattan")
    assert at.kept.tolist() == [True, False, True]  # distance == threshold → dropped
    assert at.representative.tolist() == [0, 0, 2] and at.distance.tolist() == [0.0, 1.0, 0.0]
    below = greedy_select(X, np.nextafter(1.0, 0.0), "manhattan", epsilon=0.0)
    assert below.kept.tolist() == [True, True, True]
    # the default tolerance (1e-9) absorbs float noise: one ulp below the distance is still a tie
    assert greedy_select(X, np.nextafter(1.0, 0.0), "manhattan").kept.tolist() == [True, False, True]
    assert greedy_select(X, 1.0 - 2e-9, "manhattan").kept.tolist() == [True, True, True]


def test_float_noise_at_the_threshold_is_a_tie():
    """0.9 - 0.7 is 0.20000000000000007 in floats: mathematically 0.2, so dropped at 0.2."""
    X = np.array([[0.7], [0.9]])
    assert float(pair_distances(X[1], X[0], "manhattan")) > 0.2  # the noise this guards against
    assert greedy_select(X, 0.2, "manhattan").kept.tolist() == [True, False]
    assert greedy_select(X, 0.2, "manhattan", epsilon=0.0).kept.tolist() == [True, True]
    kept, _, _ = naive_greedy(X, 0.2, "manhattan", np.arange(2))
    assert kept.tolist() == [True, False]
    with pytest.raises(ValueError, match="epsilon"):
        greedy_select(X, 0.2, "manhattan", epsilon=-1.0)


def test_elmd_ties_at_the_dedup_threshold_are_dropped():
    """CaTiO3 / SrTiO3 are one Pettifor-neighbour substitution apart: ElMD exactly 0.2 (params.yaml)."""
    from fractions import Fraction

    from xtalbench.descriptors.composition import CompositionFeaturizer, scale_positions

    pos = scale_positions("mod_petti")
    # exact ElMD: |Ca - Sr| positions × fraction 1/5 (both have Ti1 O3 in common)
    exact = abs(pos["Ca"] - pos["Sr"]) * Fraction(1, 5)
    assert exact == Fraction(1, 5)
    X = CompositionFeaturizer(kind="elmd_mod_petti", dtype="float64").transform(["CaTiO3", "SrTiO3", "BaTiO3"])
    got = greedy_select(X, 0.2, "manhattan")
    assert got.kept.tolist()[:2] == [True, False]
    kept, _, _ = naive_greedy(X, 0.2, "manhattan", np.arange(3))
    np.testing.assert_array_equal(got.kept, kept)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="metric"):
        greedy_select(np.zeros((2, 2)), 1.0, "cosine")
    with pytest.raises(ValueError, match="threshold"):
        greedy_select(np.zeros((2, 2)), -1.0)
    with pytest.raises(ValueError, match="permutation"):
        greedy_select(np.zeros((2, 2)), 1.0, order=np.array([0, 0]))


def test_visit_order_ascending_atoms_then_material_id():
    ids = ["mp-3", "mp-1", "mp-2", "mp-10"]
    order = visit_order(ids, np.array([4, 8, 4, 2]), np.array([1, 1, 1, 1]), "nsites")
    assert [ids[i] for i in order] == ["mp-10", "mp-2", "mp-3", "mp-1"]


# --- the stage ------------------------------------------------------------------------------


def _frame(fid: str, mid: str, numbers: list[int], a: float = 4.0, shift: float = 0.0, index: int | None = None) -> dict:
    n = len(numbers)
    positions = [[(k / n) * a + shift, (k / n) * a, (k / n) * a] for k in range(n)]
    return make_frame(
        frame_id=fid,
        material_id=mid,
        source="test",
        lattice=[a, 0, 0, 0, a, 0, 0, 0, a],
        numbers=numbers,
        positions=positions,
        trajectory_id=mid,
        frame_index=index,
    )


def _table():
    frames = [
        _frame("a-0", "mp-a", [26, 26, 8, 8, 8]),  # Fe2O3
        _frame("b-0", "mp-b", [26, 26, 8, 8, 8], a=4.5),  # Fe2O3 polymorph → near-duplicate of a
        _frame("c-0", "mp-c", [11, 17], index=0),  # NaCl, three frames; judged by the last
        _frame("c-1", "mp-c", [11, 17], shift=0.001, index=1),
        _frame("c-2", "mp-c", [11, 17], shift=0.3, index=2),
        _frame("d-0", "mp-d", [3, 17]),  # LiCl: ElMD mod_petti to NaCl = 0.5
        _frame("e-0", "mp-e", [118, 8]),  # Og: not on the ElMD scales → quarantined
        _frame("f-0", "mp-f", [20, 22, 8, 8, 8]),  # CaTiO3
        _frame("g-0", "mp-g", [38, 22, 8, 8, 8]),  # SrTiO3: 0.2 from CaTiO3
    ]
    return frames_table(frames)


CFG = {"level": "composition", "order": "nsites", "metric": {"composition": "elmd_mod_petti"}, "threshold": {"composition": 0.2}}


def test_stage_outputs_add_up_and_explain_every_row():
    table = _table()
    kept, clusters, metrics = run_dedup(table, CFG)
    rows = {r["frame_id"]: r for r in clusters.to_pylist()}
    assert clusters.num_rows == table.num_rows and kept.schema == FRAMES_SCHEMA
    assert rows["b-0"]["reason"] == "near-duplicate" and rows["b-0"]["representative"] == "mp-a"
    assert rows["b-0"]["distance"] == 0.0 and rows["b-0"]["level"] == "composition"
    assert rows["g-0"]["reason"] == "near-duplicate" and rows["g-0"]["representative"] == "mp-f"
    assert rows["g-0"]["distance"] == pytest.approx(0.2)
    assert rows["d-0"]["reason"] == "kept" and rows["d-0"]["representative"] == "mp-d"
    q = rows["e-0"]["reason"]
    assert q.startswith("quarantined") and "'e-0'" in q and "'numbers'" in q and "Og" in q
    assert sorted(kept.column("frame_id").to_pylist()) == ["a-0", "c-0", "c-1", "c-2", "d-0", "f-0"]
    for unit in ("frames", "materials"):
        total = metrics["kept"][unit] + metrics["dropped"][unit] + metrics["quarantined"][unit]
        assert total + (metrics["thinned"]["frames"] if unit == "frames" else 0) == metrics["read"][unit]
    assert metrics["read"] == {"frames": 9, "materials": 7}
    level = metrics["levels"]["composition"]
    assert level["read"] == level["kept"] + level["dropped"] + level["quarantined"]


def test_frames_of_one_material_kept_or_dropped_together():
    frames = [_frame(f"x-{k}", "mp-x", [11, 17], shift=0.01 * k, index=k) for k in range(3)]
    frames += [_frame("y-0", "mp-y", [11, 17])]  # NaCl again, fewer... same nsites: mp-x first by id
    frames += [_frame(f"z-{k}", "mp-z", [11, 11, 17, 17], index=k) for k in range(2)]
    kept, clusters, _ = run_dedup(frames_table(frames), CFG)
    by_material: dict[str, set[str]] = {}
    for row in clusters.to_pylist():
        by_material.setdefault(row["material_id"], set()).add(row["reason"])
    assert all(len(reasons) == 1 for reasons in by_material.values())
    assert by_material == {"mp-x": {"kept"}, "mp-y": {"near-duplicate"}, "mp-z": {"near-duplicate"}}
    assert kept.num_rows == 3


def test_thinning_drops_only_barely_moved_frames():
    cfg = {**CFG, "thin_trajectories": True, "thin_tolerance": 0.01}
    kept, clusters, metrics = run_dedup(_table(), cfg)
    rows = {r["frame_id"]: r for r in clusters.to_pylist()}
    assert rows["c-1"]["reason"] == "thinned" and rows["c-1"]["distance"] == pytest.approx(0.001)
    assert rows["c-2"]["reason"] == "kept"  # moved 0.3 Å, and it is the judged (last) frame
    assert metrics["thinned"]["frames"] == 1 and "c-1" not in kept.column("frame_id").to_pylist()


def test_stage_is_deterministic(tmp_path):
    outputs = []
    for k in range(2):
        kept, clusters, _ = run_dedup(_table(), CFG)
        write_parquet(kept, tmp_path / f"kept{k}.parquet")
        write_parquet(clusters, tmp_path / f"clusters{k}.parquet")
        outputs.append(((tmp_path / f"kept{k}.parquet").read_bytes(), (tmp_path / f"clusters{k}.parquet").read_bytes()))
    assert outputs[0] == outputs[1]
    assert pq.read_table(tmp_path / "kept0.parquet").num_rows == 6


def test_structure_level_xrd_drops_identical_structures():
    cfg = {"level": "structure", "metric": {"structure": "xrd"}, "threshold": {"structure": 0.05}}
    frames = [
        _frame("p-0", "mp-p", [11, 17]),
        _frame("q-0", "mp-q", [11, 17], shift=0.0),  # the same crystal under another id
        _frame("r-0", "mp-r", [11, 17], a=5.5),  # other lattice → other peaks
    ]
    _, clusters, metrics = run_dedup(frames_table(frames), cfg)
    rows = {r["frame_id"]: r for r in clusters.to_pylist()}
    assert rows["q-0"]["reason"] == "near-duplicate" and rows["q-0"]["distance"] < 1e-9
    assert rows["r-0"]["reason"] == "kept"
    assert metrics["levels"]["structure"]["kept"] == 2


def test_dataset_overrides_merge():
    cfg = {"level": "both", "threshold": {"composition": 0.2, "structure": 0.1}, "overrides": {"d": {"level": "structure", "threshold": {"structure": 0.05}}}}
    merged = dataset_config(cfg, "d")
    assert merged["level"] == "structure" and merged["threshold"] == {"composition": 0.2, "structure": 0.05}
    assert dataset_config(cfg, "other")["level"] == "both"


# --- streaming: bounded memory, same bytes ----------------------------------------------------


def _long_table():
    """Materials whose frames straddle small batches, a quarantined one, thinnable frames."""
    frames = []
    for m, numbers in enumerate([[26, 26, 8, 8, 8], [11, 17], [3, 17], [118, 8], [20, 22, 8, 8, 8], [38, 22, 8, 8, 8], [11, 11, 17, 17]]):
        for k in range(m % 3 + 2):
            frames.append(_frame(f"m{m}-{k}", f"mp-{m}", numbers, a=4.0 + 0.1 * m, shift=0.002 * k * (k % 2) + 0.2 * (k // 2), index=k))
    return frames_table(frames)


@pytest.mark.parametrize("cfg", [CFG, {**CFG, "thin_trajectories": True, "order": "reduced_natoms"}])
def test_streamed_file_equals_whole_table_bytes(tmp_path, monkeypatch, cfg):
    import pyarrow.parquet as pq_module

    from xtalbench.dedup import io as dedup_io
    from xtalbench.dedup.stage import dedup_file

    table = _long_table()
    frames = tmp_path / "frames.parquet"
    pq_module.write_table(table, frames, row_group_size=4)  # several row groups
    # the whole table in memory, in one batch (as the stage ran before it streamed)
    kept, clusters, metrics = run_dedup(pq_module.read_table(frames), cfg, batch_rows=10_000)
    write_parquet(kept, tmp_path / "whole_kept.parquet")
    write_parquet(clusters, tmp_path / "whole_clusters.parquet")

    seen: list[int] = []
    real_iter = dedup_io.iter_batches

    def spy(*args, **kwargs):
        for batch in real_iter(*args, **kwargs):
            seen.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(dedup_io, "iter_batches", spy)
    monkeypatch.setattr(pq_module, "read_table", lambda *a, **k: pytest.fail("the stage must not read the whole table"))
    streamed = dedup_file(frames, tmp_path / "kept.parquet", tmp_path / "clusters.parquet", cfg, batch_rows=3)
    assert seen and max(seen) <= 3 and sum(seen) % table.num_rows == 0  # only 3-row batches, whole passes
    assert (tmp_path / "kept.parquet").read_bytes() == (tmp_path / "whole_kept.parquet").read_bytes()
    assert (tmp_path / "clusters.parquet").read_bytes() == (tmp_path / "whole_clusters.parquet").read_bytes()
    assert streamed == metrics and metrics["quarantined"]["materials"] == 1
    if cfg.get("thin_trajectories"):
        assert metrics["thinned"]["frames"] > 0


def test_sinks_receive_one_batch_at_a_time():
    from xtalbench.dedup.io import FrameSource
    from xtalbench.dedup.stage import clusters_schema, dedup_stream

    class Sink:
        def __init__(self):
            self.sizes: list[int] = []

        def write(self, t):
            self.sizes.append(t.num_rows)

    table = _long_table()
    kept, clusters = Sink(), Sink()
    metrics = dedup_stream(FrameSource(table, batch_rows=4), kept, clusters, CFG)
    assert max(clusters.sizes) <= 4 and sum(clusters.sizes) == table.num_rows == metrics["read"]["frames"]
    assert max(kept.sizes) <= 4 and sum(kept.sizes) == metrics["kept"]["frames"]
    assert clusters_schema().names == ["frame_id", "material_id", "level", "representative", "distance", "reason"]


def test_thinning_with_interleaved_trajectories():
    # two materials' frames interleaved: references are per (material, trajectory), never mixed
    frames = [
        _frame("x-0", "mp-x", [11, 17], index=0),
        _frame("y-0", "mp-y", [3, 17], index=0),
        _frame("x-1", "mp-x", [11, 17], shift=0.001, index=1),  # 0.001 Å from x-0 → thinned
        _frame("y-1", "mp-y", [3, 17], shift=0.5, index=1),  # moved → stays
        _frame("y-2", "mp-y", [3, 17], shift=0.5005, index=2),  # last frame of mp-y: never thinned
        _frame("x-2", "mp-x", [11, 17], shift=0.0015, index=2),  # last of mp-x: never thinned
    ]
    cfg = {**CFG, "threshold": {"composition": 0.0}, "thin_trajectories": True, "thin_tolerance": 0.01}
    for batch_rows in (1, 2, 100):
        _, clusters, metrics = run_dedup(frames_table(frames), cfg, batch_rows=batch_rows)
        reasons = dict(zip(clusters.column("frame_id").to_pylist(), clusters.column("reason").to_pylist()))
        assert [f for f, r in reasons.items() if r == "thinned"] == ["x-1"], batch_rows
        assert metrics["thinned"]["frames"] == 1 and metrics["kept"]["frames"] == 5


def test_describe_follows_requested_row_order_and_skips_failures():
    from xtalbench.dedup.io import FrameSource
    from xtalbench.dedup.stage import describe

    table = _table()  # row 6 is the Og frame
    rows = np.array([8, 0, 6, 3, 5])
    X, metric, errors, good = describe("composition", "elmd_mod_petti", FrameSource(table, batch_rows=2), rows, {})
    assert metric == "manhattan" and good.tolist() == [8, 0, 3, 5] and list(errors) == [6]
    for k, row in enumerate(good):
        single, _, _, _ = describe("composition", "elmd_mod_petti", table, np.array([row]), {})
        np.testing.assert_array_equal(X[k], single[0])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(1, 118), min_size=0, max_size=12), min_size=1, max_size=20))
def test_reduced_natoms_matches_counter_gcd(numbers):
    from collections import Counter
    from functools import reduce
    from math import gcd

    import pyarrow as pa

    from xtalbench.dedup.stage import reduced_natoms_of

    column = pa.chunked_array([pa.array(numbers, pa.list_(pa.int32()))]).slice(0)
    expected = [sum(Counter(z).values()) // reduce(gcd, Counter(z).values()) if z else 0 for z in numbers]
    assert reduced_natoms_of(column).tolist() == expected


def test_missing_frames_file_names_it(tmp_path):
    from xtalbench.dedup.stage import dedup_file

    with pytest.raises(MissingInputError, match="frames.parquet"):
        dedup_file(tmp_path / "frames.parquet", tmp_path / "k.parquet", tmp_path / "c.parquet", CFG)
