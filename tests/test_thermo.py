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

from xtalbench.evaluate.stage import thermo

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
