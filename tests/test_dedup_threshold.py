"""One threshold rule for dedup and the split card: distance <= threshold + epsilon, unrounded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xtalbench.dedup.stage import DEFAULT_EPSILON, greedy_select, pair_distances
from xtalbench.descriptors.composition import CompositionFeaturizer
from xtalbench.split import card

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MP_FORMATION = SHARED / "mp-compositions" / "mp-formation.csv.gz"
THRESHOLD = 0.2


def test_card_compares_unrounded_distances():
    # 0.2000004 rounds to 0.2 at 6 significant digits; the old card flagged it "<= 0.2"
    assert card._round(0.2000004) == 0.2
    assert not card.near_duplicate(0.2000004, THRESHOLD, DEFAULT_EPSILON)
    assert card.near_duplicate(0.2 + 1e-10, THRESHOLD, DEFAULT_EPSILON)
    assert card.dedup_epsilon({"levels": {"composition": {"threshold": 0.2, "epsilon": 1e-6}}}) == 1e-6
    assert card.dedup_epsilon(None) == DEFAULT_EPSILON == card.DEFAULT_EPSILON


def test_storage_tolerance_only_for_float32_vectors():
    x64 = np.array([[0.1, 0.7], [0.3, 0.9]])
    assert card.storage_tolerance(x64, "manhattan") == 0.0
    x32 = x64.astype(np.float32).astype(np.float64)
    # 2 · D · 2^-24 · max|x| for Manhattan, hand-computed
    assert card.storage_tolerance(x32, "manhattan") == pytest.approx(2 * 2 * 2.0**-24 * 0.9)
    assert card.storage_tolerance(x32, "euclidean") == pytest.approx(2 * np.sqrt(2) * 2.0**-24 * 0.9)


@pytest.mark.skipif(not MP_FORMATION.exists(), reason="shared MP composition data not available")
def test_dedup_and_card_agree_on_every_pair_at_the_threshold():
    """Dedup decides on float64 ElMD vectors, the card on the float32 ones features.parquet stores;
    on real MP compositions (with exact ElMD ties at 0.2) both rules give the same answer per pair."""
    import pandas as pd

    formulas = pd.read_csv(MP_FORMATION, keep_default_na=False)["composition"].tolist()
    rng = np.random.default_rng(3)
    sample = ["CaTiO3", "SrTiO3", "K2GeAs2", "K2SiAs2"] + [formulas[i] for i in rng.choice(len(formulas), 400, replace=False)]
    X64 = CompositionFeaturizer(kind="elmd_mod_petti", dtype="float64").transform(sample)
    X32 = X64.astype(np.float32).astype(np.float64)
    tolerance = DEFAULT_EPSILON + card.storage_tolerance(X32, "manhattan")
    i, j = np.triu_indices(len(sample), k=1)
    d64 = pair_distances(X64[i], X64[j], "manhattan")
    d32 = pair_distances(X32[i], X32[j], "manhattan")
    dedup_says = d64 <= THRESHOLD + DEFAULT_EPSILON
    card_says = np.array([card.near_duplicate(float(d), THRESHOLD, tolerance) for d in d32])
    near = np.abs(d64 - THRESHOLD) < 1e-6
    assert near.sum() >= 2  # CaTiO3/SrTiO3 and K2GeAs2/K2SiAs2 at least: exact ties
    # K2GeAs2 / K2SiAs2: 0.2 + 5.6e-17 in float64 (kept without epsilon), 0.2000000179 in float32
    # (the figure): beyond epsilon alone, hence the card's storage tolerance
    assert d64[0 * len(sample) + 0] == pytest.approx(THRESHOLD, abs=1e-15)
    k = int(np.flatnonzero((i == 2) & (j == 3))[0])
    assert d64[k] > THRESHOLD and d32[k] > THRESHOLD + DEFAULT_EPSILON
    np.testing.assert_array_equal(card_says, dedup_says)
    # the tie pairs: dropped by dedup (both orders of visit)
    for a, b in ((0, 1), (2, 3)):
        assert greedy_select(X64[[a, b]], THRESHOLD, "manhattan").kept.tolist() == [True, False]
        assert greedy_select(X64[[b, a]], THRESHOLD, "manhattan").kept.tolist() == [True, False]
