"""Composition vectors (ElMD, Magpie) against the ElMD package and hand-computed values."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from xtalbench.core.schema import FrameError
from xtalbench.descriptors.composition import CompositionFeaturizer, elmd, parse_formula

MP_FORMATION = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mp-compositions" / "mp-formation.csv.gz"


@pytest.fixture(scope="module")
def elmd_package():
    """The PyPI `ElMD` package, made importable on current setuptools/numba.

    ElMD 0.5.15 imports `pkg_resources` without using it (gone from setuptools >= 81), and its
    numba-compiled network simplex no longer compiles with numba 0.68; run its pure-Python body.
    """
    sys.modules.setdefault("pkg_resources", types.ModuleType("pkg_resources"))
    import ElMD  # noqa: F401

    module = sys.modules["ElMD.ElMD"]
    if hasattr(module.network_simplex, "py_func"):
        module.network_simplex = module.network_simplex.py_func
    return module


@pytest.fixture(scope="module")
def formula_pairs():
    if not MP_FORMATION.exists():
        pytest.skip("shared MP composition data not available")
    import pandas as pd

    formulas = pd.read_csv(MP_FORMATION, keep_default_na=False)["composition"].tolist()
    formulas = [f for f in formulas if "He" not in parse_formula(f)]  # ElMD mis-places He on mendeleev
    rng = np.random.default_rng(11)
    idx = rng.choice(len(formulas), size=(40, 2), replace=False)
    return [(formulas[i], formulas[j]) for i, j in idx]


def test_mod_petti_matches_elmd_package(elmd_package, formula_pairs):
    for a, b in formula_pairs:
        assert elmd(a, b, "mod_petti") == pytest.approx(elmd_package.elmd(a, b, metric="mod_petti"), abs=1e-9), (a, b)


def test_mendeleev_matches_elmd_package(elmd_package, formula_pairs):
    # ElMD rounds demands to 1e-6 before its integer network simplex: agree to that precision.
    for a, b in formula_pairs[:15]:
        assert elmd(a, b, "mendeleev") == pytest.approx(elmd_package.elmd(a, b, metric="mendeleev"), abs=1e-4), (a, b)


@pytest.mark.parametrize(
    ("a", "b", "scale", "expected"),
    [
        ("Fe2O3", "FeO", "mod_petti", 0.1 * (96 - 70)),  # move 0.1 of O (96) to Fe (70)
        ("Fe2O3", "FeO", "mendeleev", 0.1 * (86 - 56)),
        ("NaCl", "LiCl", "mod_petti", 0.5 * (11 - 10)),
        ("CaTiO3", "SrTiO3", "mod_petti", 0.2 * (15 - 14)),
        ("NaCl", "NaCl", "mod_petti", 0.0),
        ("Na2Cl2", "NaCl", "mendeleev", 0.0),  # compositions are normalised to fractions
        ("HeO", "LiO", "mendeleev", 0.5 * (97 - 0)),  # He keeps its own Mendeleev number
        ("Ag(AsSe2)3", "AgAs3Se6", "mod_petti", 0.0),
    ],
)
def test_hand_computed_elmd(a, b, scale, expected):
    assert elmd(a, b, scale) == pytest.approx(expected, abs=1e-12)
    assert elmd(b, a, scale) == pytest.approx(expected, abs=1e-12)


def test_featurizer_accepts_formulas_and_count_dicts():
    for kind in ("elmd_mod_petti", "elmd_mendeleev", "magpie"):
        X = CompositionFeaturizer(kind=kind).fit().transform(["Fe2O3", {"Fe": 4, "O": 6}, {26: 2, 8: 3}])
        assert X.dtype == np.float32 and X.shape[0] == 3
        np.testing.assert_array_equal(X[0], X[1])
        np.testing.assert_array_equal(X[0], X[2])


def test_magpie_statistics_by_hand():
    from xtalbench.descriptors.composition import element_table

    f = CompositionFeaturizer(kind="magpie", dtype="float64").fit()
    props = np.asarray(element_table("magpie_sc")["Fe"]), np.asarray(element_table("magpie_sc")["O"])
    p = len(props[0])
    x = f.transform(["FeO3"])[0].reshape(5, p)
    mean = 0.25 * props[0] + 0.75 * props[1]
    np.testing.assert_allclose(x[0], mean)
    np.testing.assert_allclose(x[1], 0.25 * abs(props[0] - mean) + 0.75 * abs(props[1] - mean))
    np.testing.assert_allclose(x[2], np.minimum(*props))
    np.testing.assert_allclose(x[4], abs(props[0] - props[1]))
    single = f.transform(["Fe"])[0].reshape(5, p)
    np.testing.assert_allclose(single[1], 0.0)
    np.testing.assert_allclose(single[4], 0.0)


@pytest.mark.parametrize(
    ("item", "message"),
    [("Fe2(O3", "unbalanced"), ("2Fe", "without an element"), ("FeXx2", "Xx"), ("OgO", "Og"), ({"Fe": -1}, "amount")],
)
def test_bad_compositions_name_record_and_field(item, message):
    with pytest.raises(FrameError, match=message) as info:
        CompositionFeaturizer().transform(["NaCl", item], records=["mp-1", "mp-2"])
    assert info.value.record == "mp-2" and info.value.field == "formula"
