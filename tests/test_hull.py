"""Decomposition energies against the hull of all other phases (`xtalbench.evaluate.hull`)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pymatgen.core import Lattice, Structure

from xtalbench.core.project import write_parquet
from xtalbench.core.schema import frames_table, from_structure
from xtalbench.evaluate import hull
from xtalbench.evaluate.thermo import stability_metrics

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MP_FORMATION = SHARED / "mp-compositions" / "mp-formation.csv.gz"
MP20 = SHARED / "mp20-subset" / "mp20_subset.parquet"
REFS = SHARED / "mp-references" / "2023-02-07-mp-elemental-reference-entries.json.gz"


def write_csv(path: Path, rows: list[tuple[str, str, float]]) -> Path:
    pd.DataFrame(rows, columns=["task_id", "composition", "formation_energy_per_atom"]).to_csv(path, index=False)
    return path


def phases(rows: list[tuple[str, str, float]]) -> hull.CompetingPhases:
    return hull.CompetingPhases(pd.DataFrame(rows, columns=["material_id", "formula", "e_form"]))


# --- the hull ---------------------------------------------------------------------------------


def test_hull_of_other_phases_hand_computed():
    # Li-O: Li2O (x_O = 1/3) at -2.0, Li2O2 (x_O = 1/2) at -1.6 eV/atom, elements at 0
    cp = phases([("a", "Li2O", -2.0), ("b", "Li2O2", -1.6), ("c", "Li2O", -1.95)])
    li2o = {"Li": 2.0, "O": 1.0}
    assert cp.hull_energy(li2o) == pytest.approx(-2.0, abs=1e-12)
    # without `a` the next Li2O polymorph (-1.95) is the hull: polymorphs are other phases
    assert cp.hull_energy(li2o, exclude="a") == pytest.approx(-1.95, abs=1e-12)
    # without both Li2O phases: Li + Li2O2 on the line 0 → -1.6, at x_O = 1/3: (2/3)(-1.6)
    only = phases([("a", "Li2O", -2.0), ("b", "Li2O2", -1.6)])
    assert only.hull_energy(li2o, exclude="a") == pytest.approx(2 / 3 * -1.6, abs=1e-12)
    # a composition between Li2O and Li2O2 (Li3O2, x_O = 0.4): 0.6·(-2.0) + 0.4·(-1.6) by the lever rule
    assert only.hull_energy({"Li": 3, "O": 2}) == pytest.approx(0.6 * -2.0 + 0.4 * -1.6, abs=1e-12)
    # an element is its own reference
    assert only.hull_energy({"Li": 4}) == 0.0


def test_decomposition_energies_rules():
    cp = phases([("a", "Li2O", -2.0), ("b", "Li2O2", -1.6), ("x", "Li2O2", -1.7)])
    ids = ["a", "p", "b"]
    formulas = ["Li2O", "Li2O", "Li2O2"]
    e_form = np.array([-2.0, -1.95, -1.6])
    e_hull = np.array([0.0, 0.05, 0.0])  # "b" labelled on the hull, but phase "x" lies below it
    e_d, basis, counts = hull.decomposition_energies(cp, ids, formulas, e_form, e_hull)
    # a: hull of the others (Li + the lowest Li2O2, -1.7) at x_O = 1/3 is (2/3)(-1.7)
    assert e_d[0] == pytest.approx(-2.0 - 2 / 3 * -1.7, abs=1e-12) and basis[0] == hull.BASIS_MARGIN
    assert e_d[1] == 0.05 and basis[1] == hull.BASIS_ABOVE_HULL  # above the hull: the label (shift exact)
    assert e_d[2] == 0.0 and basis[2] == hull.BASIS_FALLBACK  # contradiction: shift formula, counted
    check = counts.pop("above_hull_check")
    assert counts == {"n_labelled": 3, "n_above_hull": 1, "n_on_hull_margin": 1, "n_on_hull_inconsistent": 1}
    # p: -1.95 − hull of the others at Li2O (a, -2.0) = 0.05 = its label: consistent
    assert check["n"] == 1 and check["median_eV_per_atom"] == pytest.approx(0.0, abs=1e-12) and check["n_beyond_tolerance"] == 0


@pytest.mark.skipif(not MP_FORMATION.exists(), reason="shared MP formation energies not available")
def test_linear_programme_equals_pymatgen_phase_diagram_on_real_li_fe_o():
    """Naive reference: a pymatgen PhaseDiagram built from every phase but the one left out."""
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
    from pymatgen.core import Composition

    table = hull.load_mp_formation(MP_FORMATION)
    sub = table[[set(dict(hull.parse_formula(f))) <= {"Li", "Fe", "O"} for f in table["formula"]]].reset_index(drop=True)
    assert len(sub) > 50
    cp = hull.CompetingPhases(sub)

    def entries(skip: str | None) -> list[PDEntry]:
        out = [PDEntry(Composition(f), e * Composition(f).num_atoms, name=m) for m, f, e in sub.itertuples(index=False) if m != skip]
        return out + [PDEntry(Composition(el), 0.0) for el in ("Li", "Fe", "O")]

    full = PhaseDiagram(entries(None))
    stable = sorted({e.name for e in full.stable_entries if len(e.composition) > 1})
    assert len(stable) >= 5
    for material_id in stable:
        formula = sub.loc[sub["material_id"] == material_id, "formula"].iloc[0]
        comp = Composition(formula)
        reference = PhaseDiagram(entries(material_id)).get_hull_energy_per_atom(comp)
        got = cp.hull_energy(dict(hull.parse_formula(formula)), exclude=material_id)
        assert got == pytest.approx(reference, abs=1e-9), material_id
    for formula in ("LiFeO2", "Li5FeO4", "Fe3O4", "Li2FeO3"):  # with everything in it
        assert cp.hull_energy(dict(hull.parse_formula(formula))) == pytest.approx(full.get_hull_energy_per_atom(Composition(formula)), abs=1e-9)


# --- one correction scheme ------------------------------------------------------------------


def test_scheme_check_recovers_a_per_anion_offset_and_corrects(tmp_path):
    # the labels' scheme puts every Br atom in a compound 0.4 eV lower (MP2020 vs legacy, roughly)
    csv = [("m1", "LiBr", -1.5), ("m2", "Li2O", -2.0), ("m3", "Li3BrO", -1.8), ("m4", "LiBrO3", -0.9), ("m5", "LiBr3", -0.5), ("m6", "Br", 0.0)]
    path = write_csv(tmp_path / "phases.csv", csv)
    x_br = {"m1": 0.5, "m2": 0.0, "m3": 0.2, "m4": 0.2}
    labels = pd.DataFrame([(m, f, e - 0.4 * x_br[m]) for m, f, e in csv if m in x_br], columns=["material_id", "formula", "e_form"])
    check = hull.scheme_check(labels, hull.load_mp_formation(path))
    assert check.n_shared == 4 and check.n_beyond_tolerance == 3 and check.n_beyond_after_correction == 0
    assert check.element_offsets["Br"] == pytest.approx(-0.4, abs=1e-9)
    assert check.element_offsets["Li"] == pytest.approx(0.0, abs=1e-9) and check.element_offsets["O"] == pytest.approx(0.0, abs=1e-9)
    cp, report = hull.build_competing_phases(labels, path, "correct")
    assert report["n_beyond_tolerance"] == 3 and report["n_shared_materials"] == 4 and report["n_phases_used"] == 6
    energy = dict(zip(cp.ids, cp.e_form, strict=True))
    assert energy["m5"] == pytest.approx(-0.5 - 0.4 * 0.75, abs=1e-9)  # CSV-only bromide moved to the label scheme
    assert energy["m6"] == 0.0  # elements stay at 0
    assert energy["m1"] == pytest.approx(-1.5 - 0.2, abs=1e-12)  # the dataset's own entry replaces the CSV's
    with pytest.raises(hull.HullSchemeError, match=r"phases\.csv.*3 of 4"):
        hull.build_competing_phases(labels, path, "refuse")
    same = labels.assign(e_form=[e for m, _, e in csv if m in x_br])
    hull.build_competing_phases(same, path, "refuse")  # one scheme: accepted


def test_bad_competing_phases_name_file_and_record(tmp_path):
    path = write_csv(tmp_path / "bad.csv", [("m1", "LiBr", -1.5)])
    path.write_text(path.read_text() + "m2,Li2O,oops\n")
    with pytest.raises(hull.HullError, match=r"bad\.csv.*'m2'.*formation_energy_per_atom"):
        hull.load_mp_formation(path)
    with pytest.raises(hull.HullError, match="not found"):
        hull.load_mp_formation(tmp_path / "missing.csv")


# --- scoring: oracle, offsets, missing predictions -------------------------------------------

SPLIT_SCHEMA = pa.schema([pa.field("frame_id", pa.string()), pa.field("material_id", pa.string()), pa.field("fold", pa.int32()),
                          pa.field("role", pa.string()), pa.field("cluster", pa.int32())])  # fmt: skip
PRED_SCHEMA = pa.schema([pa.field("frame_id", pa.string()), pa.field("material_id", pa.string()), pa.field("nsites", pa.int32()),
                         pa.field("energy", pa.float64())])  # fmt: skip


def li_o_frames() -> list[dict]:
    """Li-O materials with hand-set labels: on-hull Li2O and Li2O2, above-hull LiO2 and a Li2O polymorph."""
    cubic = Structure(Lattice.cubic(4.62), ["O", "O", "O", "O", *["Li"] * 8],
                      [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5],
                       *[[x, y, z] for x in (0.25, 0.75) for y in (0.25, 0.75) for z in (0.25, 0.75)]])  # fmt: skip
    peroxide = Structure(Lattice.hexagonal(3.14, 7.65), ["Li", "Li", "O", "O"], [[0, 0, 0], [0, 0, 0.5], [1 / 3, 2 / 3, 0.15], [2 / 3, 1 / 3, 0.85]])
    superoxide = Structure(Lattice.cubic(4.0), ["Li", "O", "O"], [[0, 0, 0], [0.5, 0.5, 0.34], [0.5, 0.5, 0.66]])
    poly = Structure(Lattice.hexagonal(3.3, 5.3), ["Li", "Li", "O"], [[1 / 3, 2 / 3, 0.1], [2 / 3, 1 / 3, 0.9], [0, 0, 0.5]])
    rows = [("t-li2o", cubic, -2.0, 0.0), ("t-li2o2", peroxide, -1.6, 0.0), ("t-lio2", superoxide, -0.9, 0.12), ("t-li2o-b", poly, -1.9995, 0.0005)]
    return [from_structure(s, frame_id=m, material_id=m, source="test", formation_energy_per_atom=ef, e_above_hull=eh) for m, s, ef, eh in rows]


@pytest.fixture
def li_o(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frames = li_o_frames()
    write_parquet(frames_table(frames), Path("datasets/lio/dedup.parquet"))
    rows = [{"frame_id": f["frame_id"], "material_id": f["material_id"], "fold": 0, "role": "test", "cluster": None} for f in frames]
    write_parquet(pa.Table.from_pylist(rows, schema=SPLIT_SCHEMA), Path("splits/lio/random.parquet"))
    # the CSV knows Li2O and Li2O2 under other ids and LiO2 at -0.9 (same scheme as the labels)
    write_csv(tmp_path / "phases.csv", [("c-1", "Li2O", -2.0), ("c-2", "Li2O2", -1.6), ("t-lio2", "LiO2", -0.9)])
    return frames


def score(frames: list[dict], shift: float = 0.0, drop: str | None = None, **extra) -> dict:
    from xtalbench.evaluate.scoring import score_model

    preds = [{"frame_id": f["frame_id"], "material_id": f["material_id"], "nsites": f["nsites"], "energy": (f["formation_energy_per_atom"] + shift) * f["nsites"]}
             for f in frames if f["material_id"] != drop]  # fmt: skip
    params = {"evaluate": {"n_bootstrap": 5, "mp_references": str(REFS), "competing_phases": "phases.csv", "gap_strategies": ["random", "random"], **extra}}
    model = SimpleNamespace(name="oracle", kind="mace-file", energy_kind="formation", training_set={"name": "none"})
    return score_model("lio", model, pa.Table.from_pylist(preds, schema=PRED_SCHEMA), params, {})


def test_oracle_and_offsets_on_decomposition_energies(li_o):
    result = score(li_o)
    test = result["strategies"]["random"]["folds"]["0"]["test"]
    assert result["stability"]["method"] == "decomposition_energy" and test["stability_basis"] == "decomposition_energy"
    # The CSV's Li2O and Li2O2 (c-1, c-2) sit exactly where the labels put t-li2o and t-li2o2: each is
    # degenerate with another phase, E_d = 0, still stable at threshold 0. t-li2o-b is 0.5 meV above.
    assert (test["tp"], test["fp"], test["fn"], test["tn"]) == (2, 0, 0, 2)
    assert test["f1"] == 1.0 and test["false_kill_rate"] == 0.0 and test["shift_f1"] == 1.0
    assert test["daf"] == pytest.approx(1 / 0.5) and test["prevalence"] == 0.5


def test_a_one_mev_offset_does_not_flip_materials_stable_by_a_margin(li_o, tmp_path):
    # without the CSV's duplicates the margins are real: Li2O -2.0 vs the Li2O polymorph at -1.9995
    # (0.5 meV/atom), Li2O2 -1.6 vs Li + LiO2 / Li2O: hand-computed below
    write_csv(tmp_path / "phases.csv", [("t-lio2", "LiO2", -0.9)])
    base = score(li_o)["strategies"]["random"]["folds"]["0"]["test"]
    assert base["f1"] == 1.0 and base["n_stability_on_hull_margin"] == 2
    up = score(li_o, shift=0.001)["strategies"]["random"]["folds"]["0"]["test"]
    down = score(li_o, shift=-0.001)["strategies"]["random"]["folds"]["0"]["test"]
    # Li2O2's margin: hull of the others at x_O = 1/2 is Li2O (x 1/3, -2.0) + O (x 1, 0) by the lever
    # rule, 3/4·(-2.0) = -1.5 (LiO2 at -0.9 lies above that line), so E_d = -1.6 + 1.5 = -0.1;
    # Li2O: hull of the others = its polymorph at -1.9995, E_d = -0.5 meV/atom.
    # +1 meV/atom: Li2O (margin 0.5 meV) is lost, Li2O2 (100 meV) stays: F1 = 2/3 — not 0
    assert (up["tp"], up["fn"], up["fp"]) == (1, 1, 0) and up["f1"] == pytest.approx(2 / 3)
    # the shift formula: every on-hull material flips with +1 meV (F1 undefined: no true positive)
    assert up["shift_tp"] == 0 and up["shift_f1"] is None
    # -1 meV/atom: the polymorph 0.5 meV above the hull becomes (wrongly) stable in both
    assert down["tp"] == 2 and down["fp"] == 1 and down["f1"] == pytest.approx(0.8)


def test_missing_predictions_count_as_unstable(li_o):
    test = score(li_o, drop="t-li2o2")["strategies"]["random"]["folds"]["0"]["test"]
    assert test["n_stability_missing_predictions"] == 1 and test["n_stability_labelled"] == 4
    assert (test["tp"], test["fn"]) == (1, 1) and test["recall"] == 0.5 and test["n"] == 3
    assert test["shift_fn"] == 1


def test_without_competing_phases_the_shift_formula_is_used_and_said(li_o):
    result = score(li_o, competing_phases="nowhere.csv")
    test = result["strategies"]["random"]["folds"]["0"]["test"]
    assert result["stability"]["method"] == "shift" and "not found" in result["stability"]["note"]
    assert test["stability_basis"] == "shift" and test["f1"] == test["shift_f1"] == 1.0


def test_refuse_policy_stops_scoring_on_a_scheme_mismatch(li_o, tmp_path):
    write_csv(tmp_path / "phases.csv", [("t-li2o", "Li2O", -2.1), ("t-li2o2", "Li2O2", -1.7), ("t-lio2", "LiO2", -0.9)])
    with pytest.raises(hull.HullSchemeError, match="2 of 3"):
        score(li_o, hull_scheme_policy="refuse")


# --- MP-20: the "done when" --------------------------------------------------------


@pytest.mark.skipif(not (MP20.exists() and MP_FORMATION.exists()), reason="shared MP-20 / MP formation data not available")
def test_mp20_oracle_and_one_mev_offsets():
    mp20 = pd.read_parquet(MP20, columns=["material_id", "pretty_formula", "formation_energy_per_atom", "e_above_hull"])
    labels = pd.DataFrame({"material_id": mp20["material_id"], "formula": mp20["pretty_formula"], "e_form": mp20["formation_energy_per_atom"]})
    cp, report = hull.build_competing_phases(labels, MP_FORMATION)
    e_d, _, counts = hull.decomposition_energies(cp, list(mp20["material_id"]), list(mp20["pretty_formula"]),
                                                     mp20["formation_energy_per_atom"].to_numpy(), mp20["e_above_hull"].to_numpy(), check_above=False)  # fmt: skip
    assert counts["n_labelled"] == 2485 and report["n_shared_materials"] > 1000
    # the trimmed per-element fit recovers MP2020's Br and I anion corrections (-0.534, -0.379 eV/atom)
    assert report["element_offsets_eV_per_atom"]["Br"] == pytest.approx(-0.534, abs=0.01)
    assert report["element_offsets_eV_per_atom"]["I"] == pytest.approx(-0.379, abs=0.01)
    assert report["n_beyond_tolerance_after_correction"] < report["n_beyond_tolerance"]
    assert counts["n_on_hull_inconsistent"] < 0.05 * counts["n_labelled"]
    oracle = stability_metrics(e_d, e_d, 0.0, 1e-9)
    assert oracle["f1"] == 1.0 and oracle["false_kill_rate"] == 0.0
    e_hull = mp20["e_above_hull"].to_numpy()
    f1 = {s: stability_metrics(e_d, e_d + s, 0.0, 1e-9)["f1"] for s in (0.001, -0.001)}
    shift_f1 = {s: stability_metrics(e_hull, e_hull + s, 0.0, 1e-9)["f1"] for s in (0.001, -0.001)}
    assert shift_f1[0.001] is None and shift_f1[-0.001] > 0.95  # the old coin flip: 0 (undefined) vs ~1
    assert min(f1.values()) > 0.9  # hull-aware: a 1 meV/atom offset moves F1 by a few per cent
    assert abs(f1[0.001] - f1[-0.001]) < 0.1
