"""split stage: every strategy group-aware, LOCO clusters and merging, split card, determinism."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from xtalbench.core.project import Paths, write_parquet
from xtalbench.core.schema import Rejected, frames_table
from xtalbench.split import (
    STRATEGIES,
    SplitData,
    SplitRun,
    build_splits,
    load_split_data,
    to_table,
)
from xtalbench.split.common import (
    TEST,
    TRAIN,
    Fold,
    LeakError,
    StrategyResult,
    check_group_aware,
)
from xtalbench.split.embedding import KernelMap, median_heuristic_gamma
from xtalbench.split.labels import crystal_system
from xtalbench.split.loco import merge_small

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
N_MP20, N_TASK_FRAMES = 120, 150

PARAMS = {
    "datasets": {"tiny": {"source": "shared", "path": "unused"}},
    "featurize": {"soap": {"n_max": 3, "l_max": 2, "r_cut": 4.0}, "composition": "elmd_mod_petti", "chunk_rows": 64},
    "split": {
        "seed": 7,
        "strategies": list(STRATEGIES),
        "loco": {"k": 4, "n_components": 5, "min_cluster_fraction": 0.05, "val_fraction": 0.1},
        "random": {"test_fraction": 0.2, "val_fraction": 0.1},
        "element": {"elements": ["O", "Si", "Li", "Xe"], "min_test_materials": 3},
        "spacegroup": {"min_test_materials": 3},
        "forward": {"properties": ["formation_energy_per_atom", "energy_per_atom"], "k": 4, "min_coverage": 0.4},
        "card": {"in_domain_flag": 0.5},
    },
}


def real_frames() -> list[dict]:
    """MP-20 materials (one frame each) + MP task frames (several frames per material, no spacegroup)."""
    from xtalbench.fetch.sources.shared import read_mp20, read_task_frames

    def ok(rows):
        return (r for r in rows if not isinstance(r, Rejected))

    mp20 = list(itertools.islice(ok(read_mp20(DATA / "mp20-subset" / "mp20_subset.parquet")), N_MP20))
    tasks = list(itertools.islice(ok(read_task_frames(DATA / "mp-task-frames" / "mp_task_frames.extxyz.gz", {})), N_TASK_FRAMES))
    return mp20 + tasks


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A tiny project directory with dedup.parquet, features.parquet and params.yaml."""
    from xtalbench.featurize.stage import featurize_file

    root = tmp_path_factory.mktemp("project")
    paths = Paths("tiny", root)
    write_parquet(frames_table(real_frames()), paths.dedup)
    featurize_file(paths.dedup, paths.features, PARAMS["featurize"], paths.data_dir / "q.parquet", progress=False)
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    return root


@pytest.fixture(scope="module")
def run(project) -> tuple[SplitData, SplitRun]:
    paths = Paths("tiny", project)
    data, _ = load_split_data(paths.features, paths.dedup)
    return data, build_splits(data, PARAMS["split"])


def test_fixture_has_multi_frame_materials(run):
    data, _ = run
    assert data.frame_counts().max() > 1 and data.n_frames == N_MP20 + N_TASK_FRAMES


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_is_group_aware_and_complete(run, strategy):
    data, result = run
    table = to_table(result.results[strategy], data).to_pandas()
    assert len(result.results[strategy].folds) >= (1 if strategy == "random" else 2)
    # one row per frame per fold
    counts = table.groupby("fold")["frame_id"].agg(["count", "nunique"])
    assert (counts["count"] == data.n_frames).all() and (counts["nunique"] == data.n_frames).all()
    assert set(table["role"]) <= {"train", "val", "test"}
    # no material on two sides of a fold
    sides = table.groupby(["fold", "material_id"])["role"].nunique()
    assert sides.max() == 1
    assert (table.groupby("fold")["role"].apply(lambda r: (r == "test").sum() > 0 and (r == "train").sum() > 0)).all()


def test_leak_check_catches_a_straddling_material():
    table = pd.DataFrame({"frame_id": ["a", "b"], "material_id": ["m", "m"], "fold": [0, 0], "role": ["train", "test"], "cluster": [None, None]})
    import pyarrow as pa

    from xtalbench.split.common import SPLIT_SCHEMA

    with pytest.raises(LeakError, match="'m'"):
        check_group_aware(pa.Table.from_pandas(table, schema=SPLIT_SCHEMA, preserve_index=False))


def test_loco_folds_test_each_cluster_once(run):
    data, result = run
    loco = result.results["loco"]
    n_clusters = loco.info["n_clusters"]
    assert len(loco.folds) == n_clusters
    tested = np.zeros(data.n_materials, int)
    for c, fold in enumerate(loco.folds):
        assert np.array_equal(fold.roles == TEST, loco.cluster == c)
        tested += fold.roles == TEST
    assert (tested == 1).all()
    sizes = np.bincount(loco.cluster, weights=data.frame_counts())
    assert sizes.tolist() == loco.info["cluster_sizes"] and list(sizes) == sorted(sizes, reverse=True)
    assert (sizes >= 0.05 * data.n_frames).all() or n_clusters == 2


def test_merge_small_joins_the_nearest_cluster():
    coords = np.array([[0.0], [0.1], [10.0], [10.1], [10.2], [3.0]])
    labels = np.array([0, 0, 1, 1, 1, 2])
    merged, merges = merge_small(labels, coords, np.ones(6), min_size=2)
    assert merges == [{"cluster": 2, "size": 1, "into": 0, "centroid_distance": pytest.approx(2.95)}]
    assert merged.tolist() == [0, 0, 1, 1, 1, 0]


def test_element_folds_hold_out_the_element(run):
    data, result = run
    element = result.results["element"]
    assert "Xe" in element.info["skipped"] and "Xe" not in element.info["elements"]
    elements = data.material_elements()
    for fold in element.folds:
        has = np.array([fold.name in e for e in elements])
        assert np.array_equal(fold.roles == TEST, has)


def test_spacegroup_uses_table_or_spglib(run):
    data, result = run
    sg = result.results["spacegroup"]
    assert sg.info["from_table"] >= N_MP20 and sg.info["computed"] > 0  # task frames have no spacegroup
    assert [crystal_system(n) for n in (1, 2, 3, 15, 16, 74, 75, 142, 143, 167, 168, 194, 195, 230)] == [
        "triclinic", "triclinic", "monoclinic", "monoclinic", "orthorhombic", "orthorhombic", "tetragonal",
        "tetragonal", "trigonal", "trigonal", "hexagonal", "hexagonal", "cubic", "cubic"]
    for fold in sg.folds:
        assert (sg.cluster[fold.roles == TEST] == sg.cluster[fold.roles == TEST][0]).all()


def test_forward_tests_only_unseen_property_values(run):
    data, result = run
    forward = result.results["forward"]
    from xtalbench.split.forward import property_values

    values = property_values(data, forward.info["property"])
    for fold in forward.folds:
        seen = values[(fold.roles != TEST) & np.isfinite(values)]
        assert seen.max() <= values[fold.roles == TEST].min()


def test_random_split_sizes(run):
    data, result = run
    fold = result.results["random"].folds[0]
    assert (fold.roles == TEST).sum() == round(0.2 * data.n_materials)


def test_median_heuristic_and_nystroem_agree_with_exact():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (150, 6)), rng.normal(4, 1, (150, 6))])
    d2 = ((X[:, None] - X[None]) ** 2).sum(-1)[np.triu_indices(300, 1)]
    assert median_heuristic_gamma(X, sample=10_000) == pytest.approx(1 / np.median(d2))
    exact = KernelMap(n_components=2, random_state=0).fit_transform(X)
    approx = KernelMap(n_components=2, exact_max_rows=100, n_landmarks=300, random_state=0)
    y = approx.fit_transform(X)
    assert not approx.exact_ and approx.exact_ is not None
    assert abs(np.corrcoef(exact[:, 0], y[:, 0])[0, 1]) > 0.99


def test_card_distances_and_flags(run):
    data, result = run
    from xtalbench.split.card import build_card

    coords = np.zeros((data.n_materials, 2))
    far = np.arange(data.n_materials) < 10
    coords[:, 0] = np.where(far, 100.0, 0.0) + np.arange(data.n_materials) * 0.01
    fake = SplitRun(
        {"loco": StrategyResult("loco", [Fold("far", np.where(far, TEST, TRAIN).astype(np.int8)),
                                         Fold("mixed", np.where(np.arange(data.n_materials) % 2 == 0, TEST, TRAIN).astype(np.int8))])},
        np.zeros((data.n_frames, 2)), coords, {"method": "test"},
    )
    from xtalbench.split.stage import composition_of_materials

    dedup = {"levels": {"composition": {"metric": "elmd_mod_petti", "threshold": 0.2}, "structure": {"threshold": 0.05}}}
    composition = composition_of_materials(data)
    card = build_card("tiny", data, fake, {"card": {"in_domain_flag": 0.5}}, composition=composition, dedup_metrics=dedup)
    far_fold, mixed = card["strategies"]["loco"]["folds"]["0"], card["strategies"]["loco"]["folds"]["1"]
    assert far_fold["kpca_distance"]["fraction_test_outside_domain"] == 1.0 and far_fold["flags"] == []
    assert far_fold["kpca_distance"]["test_to_train_min"] == pytest.approx(100 - 0.01 * (data.n_materials - 1), rel=1e-4)
    assert mixed["kpca_distance"]["fraction_test_outside_domain"] == 0.0
    assert any(f.startswith("mostly_in_domain") for f in mixed["flags"])
    assert card["leakage"]["dedup_threshold"] == {"levels.composition.threshold": 0.2, "levels.structure.threshold": 0.05}
    # the task frames repeat compositions, so alternating materials put equal compositions on both sides
    assert mixed["composition_min_distance"] == 0.0
    assert any("dedup threshold 0.2" in f for f in mixed["flags"])
    hashes = data.meta.groupby(data.material_of_frame)["structure_hash"].apply(set).tolist()
    train_hashes = set().union(*hashes[1::2])
    assert mixed["test_structures_identical_to_train"] == sum(1 for h in hashes[0::2] if h & train_hashes)
    # element coverage: the held-out materials' elements missing from train are listed
    elements = data.material_elements()
    only = set().union(*elements[:10]) - set().union(*elements[10:])
    assert set(far_fold["elements_only_in_test"]) == only


def test_stage_writes_everything_byte_identically(project, monkeypatch):
    from xtalbench.cli import main

    monkeypatch.chdir(project)
    assert main(["split", "tiny"]) == 0
    out = {p: p.read_bytes() for p in sorted(Path("splits/tiny").iterdir())}
    png = Path("plots/tiny/kpca_map.png").read_bytes()
    metrics = json.loads(Path("metrics/tiny/split.json").read_text())
    card = json.loads(Path("splits/tiny/split_card.json").read_text())
    assert {p.name for p in out} == {f"{s}.parquet" for s in STRATEGIES} | {"split_card.json", "split_card.md"}
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert card["leakage"]["composition_metric"] == "manhattan"
    assert all("composition_min_distance" in f for f in card["strategies"]["random"]["folds"].values())
    loco = pq.read_table("splits/tiny/loco.parquet").to_pandas()
    assert metrics["strategies"]["loco"]["cluster_sizes"] == loco[loco.fold == 0].groupby("cluster").size().tolist()
    # the map's points: one per material, each with the cluster its frames carry in the LOCO split
    points = pd.read_csv("plots/tiny/kpca_map.csv")
    by_material = loco[loco.fold == 0].groupby("material_id")["cluster"].first()
    assert sorted(points.material_id) == sorted(by_material.index)
    assert (points.set_index("material_id").cluster == by_material.reindex(points.material_id).values).all()
    assert points[["kpc1", "kpc2"]].std().gt(0).all()  # a spread of points, not a placeholder column
    csv_bytes = Path("plots/tiny/kpca_map.csv").read_bytes()
    assert main(["split", "tiny"]) == 0
    assert {p: p.read_bytes() for p in sorted(Path("splits/tiny").iterdir())} == out
    assert Path("plots/tiny/kpca_map.png").read_bytes() == png
    assert Path("plots/tiny/kpca_map.csv").read_bytes() == csv_bytes


def test_forward_without_property_is_skipped_with_reason(run):
    data, _ = run
    from xtalbench.split.forward import forward_split

    result = forward_split(data, {"properties": ["no_such_property"], "k": 3}, seed=0)
    assert result.folds == [] and "no_such_property" in result.info["skipped"]
    assert to_table(result, data).num_rows == 0


def test_gather_returns_rows_in_the_order_asked():
    X = np.arange(40, dtype=np.float32).reshape(20, 2)
    meta = pd.DataFrame({"frame_id": [f"f{i}" for i in range(20)], "material_id": [f"m{i // 2}" for i in range(20)],
                         "elements": [["Si"]] * 20})
    data = SplitData(meta, X, chunk_rows=3)
    rows = np.array([17, 2, 9, 3])
    np.testing.assert_array_equal(data.gather(rows), X[rows])
    assert data.representatives().tolist() == list(range(1, 20, 2))  # last frame of each material
