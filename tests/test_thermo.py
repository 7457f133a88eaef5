"""Formation energies against MP's elemental references and pymatgen's MP2020 scheme."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from pymatgen.analysis.compatibility import MaterialsProject2020Compatibility
from pymatgen.core import Lattice, Structure
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

from xtalbench.evaluate import thermo

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REFS = SHARED / "mp-references" / "2023-02-07-mp-elemental-reference-entries.json.gz"
pytestmark = pytest.mark.skipif(not REFS.exists(), reason="shared MP reference entries not available")


def raw_refs() -> dict:
    with gzip.open(REFS, "rt") as handle:
        return json.load(handle)


def fe2o3() -> Structure:
    return Structure(
        Lattice.hexagonal(5.03, 13.75),
        ["Fe", "Fe", "O", "O", "O"],
        [[0, 0, 0.355], [0, 0, 0.855], [0.306, 0, 0.25], [0, 0.306, 0.25], [0.694, 0.694, 0.25]],
    )


def test_reference_entries_give_zero_formation_energy():
    refs = thermo.load_reference_energies(REFS)
    assert len(refs) == 89
    for symbol, entry_dict in raw_refs().items():
        entry = ComputedEntry.from_dict(entry_dict)
        composition = {str(el): n for el, n in entry.composition.items()}
        assert thermo.formation_energy_per_atom(entry.energy, composition, refs, symbol) == pytest.approx(0.0, abs=1e-12)


def test_elemental_structure_through_mp2020_is_zero():
    model = thermo.MP2020FormationEnergy(REFS)
    mu_fe = raw_refs()["Fe"]["energy"] / raw_refs()["Fe"]["composition"]["Fe"]
    bcc = Structure(Lattice.cubic(2.83), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert model.correction(bcc) == 0.0
    assert model.e_form_per_atom(2 * mu_fe, bcc) == pytest.approx(0.0, abs=1e-12)


def test_hand_computed_binary_without_corrections():
    raw = raw_refs()
    mu = {el: raw[el]["energy"] / sum(raw[el]["composition"].values()) for el in ("Ni", "Al")}
    nial = Structure(Lattice.cubic(2.88), ["Ni", "Al"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    model = thermo.MP2020FormationEnergy(REFS)
    assert model.correction(nial) == 0.0  # intermetallic: no anion, no U correction
    energy = -11.9
    expected = (energy - mu["Ni"] - mu["Al"]) / 2
    assert model.e_form_per_atom(energy, nial) == pytest.approx(expected, abs=1e-12)
    assert model.transform([energy], [nial]) == pytest.approx([expected])


def test_mp2020_parameters_follow_mprelaxset():
    assert thermo.mp2020_parameters({"Fe": 2, "O": 3}) == {
        "run_type": "GGA+U",
        "is_hubbard": True,
        "hubbards": {"Fe": 5.3},
        "potcar_symbols": ["PAW_PBE Fe_pv", "PAW_PBE O"],
    }
    assert thermo.mp2020_parameters({"Mn": 1, "F": 2})["hubbards"] == {"Mn": 3.9}
    sulfide = thermo.mp2020_parameters({"Fe": 1, "S": 2})  # not an oxide/fluoride: plain GGA
    assert sulfide["run_type"] == "GGA" and sulfide["hubbards"] == {}


def test_mp2020_correction_of_an_oxide_matches_pymatgen():
    structure = fe2o3()
    compat = MaterialsProject2020Compatibility()
    explicit = ComputedStructureEntry(
        structure,
        -40.0,
        parameters={
            "run_type": "GGA+U",
            "is_hubbard": True,
            "hubbards": {"Fe": 5.3},
            "potcar_symbols": ["PAW_PBE Fe_pv 06Sep2000", "PAW_PBE O 08Apr2002"],
        },
    )
    reference = compat.process_entry(explicit, on_error="raise")
    expected = 3 * compat.comp_correction["oxide"] + 2 * compat.u_corrections["O"]["Fe"]
    assert reference.correction == pytest.approx(expected)
    model = thermo.MP2020FormationEnergy(REFS)
    ours = model.correction(structure, "fe2o3")
    assert ours == pytest.approx(reference.correction)
    assert ours < -6.0  # anion (−0.687 eV/O) + Fe U (−2.256 eV/Fe) corrections
    refs = thermo.load_reference_energies(REFS)
    e_form = model.e_form_per_atom(-40.0, structure)
    assert e_form == pytest.approx((-40.0 + expected - 2 * refs["Fe"] - 3 * refs["O"]) / 5)


def test_missing_reference_names_record():
    with pytest.raises(thermo.ThermoError, match=r"record 'x-1'.*Zz"):
        thermo.formation_energy_per_atom(-1.0, {"Zz": 1}, {"Fe": -8.0}, "x-1")


def test_predicted_e_hull():
    got = thermo.predicted_e_hull(np.array([0.02, 0.0]), np.array([-1.05, -2.0]), np.array([-1.0, -2.1]))
    assert got.tolist() == pytest.approx([-0.03, 0.1])


def test_stability_metrics_on_a_constructed_confusion_matrix():
    e_true = np.array([0, 0, 0, 0, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05])
    e_pred = np.array([-0.01, 0.0, 0.02, 0.03, -0.01, 0.1, 0.1, 0.1, 0.1, 0.1])
    m = thermo.stability_metrics(e_true, e_pred, threshold=0.0)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 2, 1, 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(4 / 7)
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["prevalence"] == pytest.approx(0.4)
    assert m["daf"] == pytest.approx((2 / 3) / 0.4)
    assert m["false_kill_rate"] == pytest.approx(0.5)
    # at a 0.02 eV/atom threshold the material predicted at exactly 0.02 becomes stable (≤)
    assert thermo.stability_metrics(e_true, e_pred, threshold=0.02)["tp"] == 3


def test_stability_metrics_undefined_ratios_are_none():
    m = thermo.stability_metrics(np.array([0.1, 0.2]), np.array([0.1, 0.2]))
    assert m["precision"] is None and m["daf"] is None and m["false_kill_rate"] is None and m["f1"] is None
    assert m["accuracy"] == 1.0


# --- MP-exact inputs of the MP2020 scheme: oxide_type (1.1 Å) and oxidation states (BVAnalyzer) ---

MP20 = SHARED / "mp20-subset" / "mp20_subset.parquet"


def mp2020_table() -> dict[str, float]:
    """Anion / U correction constants (eV per atom of the element) from pymatgen's MP2020 YAML."""
    compat = MaterialsProject2020Compatibility()
    return {**compat.comp_correction, **{f"U:{el}": v for el, v in compat.u_corrections["O"].items()}}


def lifeo3() -> Structure:
    """A 10-atom LiFeO3 cell (2 f.u.) with one O-O pair per f.u. at 1.45 Å, like mp-761189:
    a superoxide by emmet's cutoff (1.35 × 1.1 = 1.485 Å) and a peroxide by pymatgen's fallback
    (1.35 × 1.05 = 1.4175 < 1.45 < 1.49 × 1.05)."""
    c = 8.0
    return Structure(
        Lattice.orthorhombic(4.0, 4.0, c),
        ["Li", "Li", "Fe", "Fe", "O", "O", "O", "O", "O", "O"],
        [[0, 0, 0], [0, 0, 0.5], [0.5, 0.5, 0], [0.5, 0.5, 0.5], [0, 0.5, 0.125], [0, 0.5, 0.125 + 1.45 / c], [0.5, 0, 0.25],
         [0, 0.5, 0.625], [0, 0.5, 0.625 + 1.45 / c], [0.5, 0, 0.75]],
    )  # fmt: skip


def test_lifeo3_superoxide_matches_mp():
    """MP's correction of LiFeO3 (mp-761189) is −5.478 eV: 2 × (Fe U −2.256 + 3 × superoxide −0.161)."""
    table = mp2020_table()
    structure = lifeo3()
    expected = 2 * table["U:Fe"] + 6 * table["superoxide"]
    assert expected == pytest.approx(-5.478, abs=1e-9)
    assert thermo.mp_entry_data(structure)["oxide_type"] == "superoxide"
    assert thermo.MP2020FormationEnergy(REFS).correction(structure) == pytest.approx(-5.478, abs=1e-9)
    # pymatgen's own fallback (no oxide_type given) calls it a peroxide: MP's −7.302 bug
    params = thermo.mp2020_parameters({"Li": 2, "Fe": 2, "O": 6})
    fallback = MaterialsProject2020Compatibility().process_entry(ComputedStructureEntry(structure, 0.0, parameters=params))
    assert fallback.correction == pytest.approx(2 * table["U:Fe"] + 6 * table["peroxide"], abs=1e-9)
    assert fallback.correction == pytest.approx(-7.302, abs=1e-9)


# formula → (material_id, the correction's hand-computed terms as {table key: count in the cell per f.u.}, f.u. in the cell)
MP20_CASES = {
    "AgHO2": ("mp-996958", {"oxide": 2}),  # hydroxide → oxide correction on both O; H is +1: no H correction
    "H11O8": ("mp-32854", {"oxide": 8}),  # hydroxide (O-H 1.0 Å < 1.023); oxidation states unassignable
    "PH4I": ("mp-24409", {"H": 4, "I": 1}),  # phosphonium iodide: H is −1 by BVAnalyzer, I −1
    "HRh": ("mp-24722", {"H": 1}),  # a hydride
    "ZrSbRu": ("mp-31457", {"Sb": 1}),  # half-Heusler: Sb −3 by BVAnalyzer
    "Pd(SeBr3)2": ("mp-29496", {"Br": 6}),  # Se is +2 (bonded to Br): no Se correction
}


@pytest.fixture(scope="module")
def mp20_structures() -> dict[str, Structure]:
    if not MP20.exists():
        pytest.skip("shared mp20 subset not available")
    import pandas as pd

    frame = pd.read_parquet(MP20, columns=["material_id", "pretty_formula", "cif"])
    wanted = {mid for mid, _ in MP20_CASES.values()}
    rows = frame[frame["material_id"].isin(wanted)]
    return {r.material_id: Structure.from_str(r.cif, fmt="cif") for r in rows.itertuples()}


@pytest.mark.parametrize("formula", sorted(MP20_CASES))
def test_mp20_corrections_match_hand_computed_mp2020(mp20_structures, formula):
    material_id, terms = MP20_CASES[formula]
    structure = mp20_structures[material_id]
    table = mp2020_table()
    n_fu = structure.composition.get_reduced_composition_and_factor()[1]
    expected = n_fu * sum(table[key] * count for key, count in terms.items())
    assert thermo.MP2020FormationEnergy(REFS).correction(structure, material_id) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("formula", sorted(MP20_CASES))
def test_mp20_corrections_match_pymatgen_given_emmets_inputs(mp20_structures, formula):
    """The reference: pymatgen's scheme fed the oxide_type and oxidation states emmet (MP) computes."""
    emmet_oxi = pytest.importorskip("emmet.core.oxidation_states")
    from pymatgen.analysis.structure_analyzer import oxide_type

    material_id, _ = MP20_CASES[formula]
    structure = mp20_structures[material_id]
    doc = emmet_oxi.OxidationStateDoc.from_structure(structure.copy(), material_id=material_id)
    composition = {str(el): float(n) for el, n in structure.composition.items()}
    entry = ComputedStructureEntry(structure, 0.0, parameters=thermo.mp2020_parameters(composition),
                                   data={"oxide_type": oxide_type(structure), "oxidation_states": dict(doc.average_oxidation_states)})  # fmt: skip
    reference = MaterialsProject2020Compatibility().process_entry(entry).correction
    assert thermo.MP2020FormationEnergy(REFS).correction(structure, material_id) == pytest.approx(reference, abs=1e-9)
    assert thermo.mp_oxidation_states(structure) == pytest.approx(dict(doc.average_oxidation_states))
