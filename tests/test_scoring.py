"""score_model end to end on tiny datasets written to a tmp dir (frames + splits + predictions)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
from pymatgen.core import Lattice, Structure

from xtalbench.core.project import write_parquet
from xtalbench.core.schema import frames_table, from_structure, make_frame
from xtalbench.evaluate.metrics import score_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REFS = SHARED / "mp-references" / "2023-02-07-mp-elemental-reference-entries.json.gz"

SPLIT_SCHEMA = pa.schema(
    [
        pa.field("frame_id", pa.string()),
        pa.field("material_id", pa.string()),
        pa.field("fold", pa.int32()),
        pa.field("role", pa.string()),
        pa.field("cluster", pa.int32()),
    ]
)
PRED_SCHEMA = pa.schema(
    [
        pa.field("frame_id", pa.string()),
        pa.field("material_id", pa.string()),
        pa.field("nsites", pa.int32()),
        pa.field("energy", pa.float64()),
        pa.field("forces", pa.list_(pa.float64())),
        pa.field("stress", pa.list_(pa.float64())),
        pa.field("strategy", pa.string()),
        pa.field("fold", pa.int32()),
    ]
)
MATERIALS = ["mp-1", "mp-2", "mp-3", "mvc-4", "mp-5", "x-6"]
CLUSTER = {m: 0 if i < 3 else 1 for i, m in enumerate(MATERIALS)}


def params(**extra) -> dict:
    return {"evaluate": {"n_bootstrap": 50, "seed": 3, "mp_references": str(REFS), "stability_threshold": 0.0, **extra}}


def spec(name="zs", kind="chgnet", energy_kind="total", **training_set) -> SimpleNamespace:
    ts = {"name": "MPtrj", "database": "Materials Project", "version": "2021.2.8", **training_set}
    return SimpleNamespace(name=name, kind=kind, energy_kind=energy_kind, training_set=ts)


def write_split(dataset: str, strategy: str, frames: list[dict], roles: dict[int, dict[str, str]], clusters: dict[str, int] | None) -> None:
    """roles: fold → material_id → role (or frame_id → role for leaky splits)."""
    rows = []
    for fold, assign in roles.items():
        for f in frames:
            role = assign.get(f["frame_id"], assign.get(f["material_id"]))
            cluster = None if clusters is None else clusters[f["material_id"]]
            rows.append({"frame_id": f["frame_id"], "material_id": f["material_id"], "fold": fold, "role": role, "cluster": cluster})
    write_parquet(pa.Table.from_pylist(rows, schema=SPLIT_SCHEMA), Path("splits") / dataset / f"{strategy}.parquet")


def loco_roles() -> dict[int, dict[str, str]]:
    out = {}
    for fold in (0, 1):
        assign = {m: ("test" if CLUSTER[m] == fold else "train") for m in MATERIALS}
        assign[next(m for m in MATERIALS if CLUSTER[m] != fold)] = "val"
        out[fold] = assign
    return out


def random_roles() -> dict[int, dict[str, str]]:
    order = ["mp-1", "mvc-4", "mp-5", "mp-2", "mp-3", "x-6"]
    return {
        0: {m: r for m, r in zip(order, ["test", "test", "test", "val", "train", "train"], strict=True)},
        1: {m: r for m, r in zip(order, ["val", "train", "train", "test", "test", "test"], strict=True)},
    }


def frames_dataset() -> list[dict]:
    """6 materials × 2 frames of a 2-atom Si cell with energies, forces and stresses."""
    rng = np.random.default_rng(0)
    frames = []
    for i, material in enumerate(MATERIALS):
        for k in range(2):
            frames.append(
                make_frame(
                    frame_id=f"{material}:{k}",
                    material_id=material,
                    source="test",
                    lattice=np.eye(3) * 3.0,
                    numbers=[14, 14],
                    positions=[[0, 0, 0], [1.5 + 0.1 * k, 1.5, 1.5]],
                    energy=-10.0 - 0.1 * i - 0.05 * k,
                    forces=rng.normal(0, 0.5, size=6),
                    stress=rng.normal(0, 0.01, size=6),
                    trajectory_id=material,
                    frame_index=k,
                )
            )
    return frames


def write_dataset(name: str, frames: list[dict]) -> None:
    write_parquet(frames_table(frames), Path("datasets") / name / "dedup.parquet")


def predictions(frames: list[dict], energy_error_per_atom=None, strategy=None, fold=None, rows=None) -> pa.Table:
    out = []
    for f in frames if rows is None else rows:
        err = 0.0 if energy_error_per_atom is None else energy_error_per_atom(f)
        out.append(
            {
                "frame_id": f["frame_id"],
                "material_id": f["material_id"],
                "nsites": f["nsites"],
                "energy": None if f["energy"] is None else f["energy"] + err * f["nsites"],
                "forces": f["forces"],
                "stress": f["stress"],
                "strategy": strategy,
                "fold": fold,
            }
        )
    return pa.Table.from_pylist(out, schema=PRED_SCHEMA)


@pytest.fixture
def frames_ds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frames = frames_dataset()
    write_dataset("tiny", frames)
    write_split("tiny", "loco", frames, loco_roles(), CLUSTER)
    write_split("tiny", "random", frames, random_roles(), None)
    return frames


def test_perfect_zero_shot_predictions(frames_ds):
    result = score_model("tiny", spec(), predictions(frames_ds), params(), {"device": "cpu", "structures_per_s": 12.5})
    written = json.loads(Path("metrics/tiny/zs.json").read_text())
    assert written["strategies"]["loco"]["mean"]["test"]["energy_mae_meV_per_atom"] == 0.0
    loco = result["strategies"]["loco"]
    assert set(loco["folds"]) == {"0", "1"}
    test0 = loco["folds"]["0"]["test"]
    assert test0["energy_mae_meV_per_atom"] == 0.0
    assert test0["force_mae_meV_per_A"] == 0.0 and test0["stress_mae_GPa"] == 0.0
    assert test0["force_cosine"] == pytest.approx(1.0)
    assert test0["n"] == 6 and test0["n_materials"] == 3
    assert test0["cluster_sizes"] == {"0": 3}
    assert loco["folds"]["0"]["train"]["cluster_sizes"] == {"1": 2}
    # zero-shot: every role is scored from the one prediction per frame
    assert set(result["strategies"]["random"]["folds"]["0"]) == {"train", "val", "test"}
    assert result["throughput"] == {"device": "cpu", "structures_per_s": 12.5}
    # no formation-energy labels: null + a note
    assert test0["e_form_mae_meV_per_atom"] is None
    assert "formation_energy_per_atom" in result["notes"]["e_form_mae_meV_per_atom"]
    assert "e_above_hull" in result["notes"]["f1"]
    contamination = result["contamination"]
    assert contamination["method"] == "database-version" and contamination["upper_bound"] is True
    assert contamination["fraction"] == pytest.approx(4 / 6)  # mp-1, mp-2, mp-3, mp-5 of 6 test materials
    assert test0["contamination_fraction"] == pytest.approx(1.0)  # mp-1 mp-2 mp-3
    assert loco["folds"]["1"]["test"]["contamination_fraction"] == pytest.approx(1 / 3)  # mp-5 of mvc-4 mp-5 x-6
    assert result["coverage"]["strategies"]["loco"]["n_missing_predictions"] == 0
    with open("plots/tiny/zs/parity_energy.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(frames_ds) and rows[0]["truth"] == rows[0]["prediction"]
    assert Path("plots/tiny/zs/parity_forces.png").stat().st_size > 0
    assert result["plots"]["forces"]["n_points"] == 6 * len(frames_ds)


def test_zero_shot_errors_per_fold_mean_and_gap(frames_ds):
    err = lambda f: 0.1 if CLUSTER[f["material_id"]] == 0 else 0.3  # noqa: E731 (eV/atom)
    result = score_model("tiny", spec(), predictions(frames_ds, err), params(), {})
    loco = result["strategies"]["loco"]
    assert loco["folds"]["0"]["test"]["energy_mae_meV_per_atom"] == pytest.approx(100.0)
    assert loco["folds"]["1"]["test"]["energy_mae_meV_per_atom"] == pytest.approx(300.0)
    assert loco["mean"]["test"]["energy_mae_meV_per_atom"] == pytest.approx(200.0)
    assert loco["std"]["test"]["energy_mae_meV_per_atom"] == pytest.approx(100.0)
    assert loco["mean"]["test"]["n_folds"] == 2
    gap = result["gap"]["energy_mae_meV_per_atom"]
    # a zero-shot model sees the same materials as test in both strategies: ratio exactly 1
    assert gap["ratio"] == pytest.approx(1.0)
    assert gap["ci_low"] <= 1.0 <= gap["ci_high"]
    assert result["gap"]["force_mae_meV_per_A"]["ratio"] is None  # perfect forces: MAE 0 in the denominator
    first = {p: p.read_bytes() for p in [Path("metrics/tiny/zs.json"), *sorted(Path("plots/tiny/zs").iterdir())]}
    again = score_model("tiny", spec(), predictions(frames_ds, err), params(), {})
    assert again["gap"] == result["gap"]
    assert {p: p.read_bytes() for p in first} == first  # byte-identical JSON, CSV and PNG


def test_fold_trained_predictions_join_on_strategy_and_fold(frames_ds):
    def val_test(strategy_roles, fold):
        return [f for f in frames_ds if strategy_roles[fold][f["material_id"]] in ("val", "test")]

    table = pa.concat_tables(
        [
            predictions(frames_ds, lambda f: 0.1, "random", 0, rows=val_test(random_roles(), 0)),
            predictions(frames_ds, lambda f: 0.2, "loco", 1, rows=val_test(loco_roles(), 1)),
        ]
    )
    result = score_model("tiny", spec("trained", kind="mace-trained", name_ts="x"), table, params(), {})
    strategies = result["strategies"]
    assert set(strategies["random"]["folds"]) == {"0"} and set(strategies["loco"]["folds"]) == {"1"}
    assert set(strategies["loco"]["folds"]["1"]) == {"val", "test"}  # train rows are not predicted
    assert strategies["random"]["folds"]["0"]["test"]["energy_mae_meV_per_atom"] == pytest.approx(100.0)
    assert strategies["loco"]["folds"]["1"]["test"]["energy_mae_meV_per_atom"] == pytest.approx(200.0)
    assert result["gap"]["energy_mae_meV_per_atom"]["ratio"] == pytest.approx(2.0)
    contamination = result["contamination"]
    assert contamination["method"] == "fold-overlap" and contamination["fraction"] == 0.0
    assert strategies["loco"]["folds"]["1"]["test"]["contamination_fraction"] == 0.0


def test_fold_trained_contamination_detects_a_leaky_split(frames_ds):
    leaky = loco_roles()
    leaky[1]["mp-2:0"] = "test"  # one frame of a training material lands in the test fold
    write_split("tiny", "loco", frames_ds, leaky, CLUSTER)
    rows = [f for f in frames_ds if leaky[1].get(f["frame_id"], leaky[1][f["material_id"]]) in ("val", "test")]
    result = score_model("tiny", spec("trained", kind="mace-trained"), predictions(frames_ds, None, "loco", 1, rows=rows), params(), {})
    fold = result["contamination"]["strategies"]["loco"]["folds"]["1"]
    assert fold["n_contained"] == 1 and fold["fraction"] == pytest.approx(1 / 4)


def test_ids_file_contamination(frames_ds):
    Path("ids.txt").write_text("# training ids\nmp-1\nx-6\nmp-999\n")
    result = score_model("tiny", spec(ids_file="ids.txt"), predictions(frames_ds), params(), {})
    assert result["contamination"]["method"] == "ids"
    assert result["contamination"]["fraction"] == pytest.approx(2 / 6)


def test_bad_predictions_name_the_record(frames_ds):
    bad = predictions(frames_ds).to_pylist()
    bad[0]["frame_id"] = "nope:0"
    with pytest.raises(ValueError, match=r"record 'nope:0', field 'frame_id'"):
        score_model("tiny", spec(), pa.Table.from_pylist(bad, schema=PRED_SCHEMA), params(), {})
    stray = predictions(frames_ds, None, "loco", 7, rows=frames_ds[:1])  # the split has folds 0 and 1
    with pytest.raises(ValueError, match=r"record 'mp-1:0', field 'fold'"):
        score_model("tiny", spec(kind="mace-trained"), stray, params(), {})
    with pytest.raises(ValueError, match=r"record 'mp-1:0', field 'strategy'"):  # fold-trained rows need strategy
        score_model("tiny", spec(kind="mace-trained"), predictions(frames_ds), params(), {})


# --- MP-like relaxed structures with formation energies and hull distances ------------------


def mp_structures() -> list[tuple[str, Structure, float, float]]:
    """(material_id, structure, E_form eV/atom, E_hull eV/atom)"""
    return [
        ("mp-22862", Structure(Lattice.cubic(5.69), ["Na", "Na", "Na", "Na", "Cl", "Cl", "Cl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.5, 0.5, 0.5]]), -2.1, 0.0),
        ("mp-19770", Structure(Lattice.hexagonal(5.03, 13.75), ["Fe", "Fe", "O", "O", "O"], [[0, 0, 0.355], [0, 0, 0.855], [0.306, 0, 0.25], [0, 0.306, 0.25], [0.694, 0.694, 0.25]]), -1.7, 0.03),
        ("mp-1487", Structure(Lattice.cubic(2.88), ["Ni", "Al"], [[0, 0, 0], [0.5, 0.5, 0.5]]), -0.65, 0.0),
        ("mp-1265", Structure(Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]), -3.0, 0.05),
        ("mp-13", Structure(Lattice.cubic(2.83), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]]), 0.0, 0.0),
        ("mp-1138", Structure(Lattice.cubic(4.03), ["Li", "F"], [[0, 0, 0], [0.5, 0.5, 0.5]]), -3.1, 0.01),
    ]


@pytest.fixture
def mp_ds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frames = [
        from_structure(s, frame_id=m, material_id=m, source="test", formation_energy_per_atom=ef, e_above_hull=eh)
        for m, s, ef, eh in mp_structures()
    ]
    write_dataset("mp", frames)
    ids = [f["material_id"] for f in frames]
    clusters = {m: i % 2 for i, m in enumerate(ids)}
    loco = {k: {m: ("test" if clusters[m] == k else "train") for m in ids} for k in (0, 1)}
    rnd = {k: {m: ("test" if i // 3 == k else "train") for i, m in enumerate(ids)} for k in (0, 1)}
    write_split("mp", "loco", frames, loco, clusters)
    write_split("mp", "random", frames, rnd, None)
    return frames


def formation_predictions(frames: list[dict], shift: float = 0.0) -> pa.Table:
    rows = [
        {"frame_id": f["frame_id"], "material_id": f["material_id"], "nsites": f["nsites"], "energy": (f["formation_energy_per_atom"] + shift) * f["nsites"]}
        for f in frames
    ]
    return pa.Table.from_pylist(rows, schema=PRED_SCHEMA)


@pytest.mark.skipif(not REFS.exists(), reason="shared MP reference entries not available")
def test_formation_energy_model_perfect_stability(mp_ds):
    result = score_model("mp", spec("mace-ef", kind="mace-file", energy_kind={"mp": "formation"}), formation_predictions(mp_ds), params(), {})
    test = result["strategies"]["random"]["mean"]["test"]
    assert test["e_form_mae_meV_per_atom"] == pytest.approx(0.0, abs=1e-9)
    pooled = result["strategies"]["loco"]["folds"]
    stable = sum(r["test"]["tp"] + r["test"]["fn"] for r in pooled.values())
    assert stable == 3  # NaCl, NiAl, Fe on the hull
    for fold in pooled.values():
        m = fold["test"]
        if m["tp"]:
            assert m["f1"] == 1.0 and m["false_kill_rate"] == 0.0 and m["daf"] == pytest.approx(1 / m["prevalence"])
    assert result["energy_kind"] == "formation"
    assert "formation" in result["notes"]["energy_mae_meV_per_atom"]
    assert "forces" in result["notes"]["force_mae_meV_per_A"]


@pytest.mark.skipif(not REFS.exists(), reason="shared MP reference entries not available")
@pytest.mark.parametrize("kind", ["mace-file", "chgnet"])
def test_total_energy_model_goes_through_mp2020_and_references(mp_ds, kind):
    """mace-file energies are raw DFT-like (the MP2020 correction is applied); CHGNet's already
    include it (trained on MPtrj corrected energies), so it must not be applied twice."""
    from xtalbench.core.schema import to_structure
    from xtalbench.evaluate.thermo import MP2020FormationEnergy, load_reference_energies

    refs = load_reference_energies(REFS)
    model = MP2020FormationEnergy(REFS)
    shift = 0.05  # eV/atom too high everywhere
    rows = []
    for f in mp_ds:
        s = to_structure(f)
        mu = sum(n * refs[str(el)] for el, n in s.composition.items())
        energy = (f["formation_energy_per_atom"] + shift) * f["nsites"] + mu
        if kind != "chgnet":
            energy -= model.correction(s)
        rows.append({"frame_id": f["frame_id"], "material_id": f["material_id"], "nsites": f["nsites"], "energy": energy})
    table = pa.Table.from_pylist(rows, schema=PRED_SCHEMA)
    result = score_model("mp", spec("m", kind=kind), table, params(), {})
    assert ("already" in result["e_form_method"]) == (kind == "chgnet")
    assert result["coverage"]["e_form"]["n_computed"] == 6 and result["coverage"]["e_form"]["n_failed"] == 0
    for fold in result["strategies"]["loco"]["folds"].values():
        assert fold["test"]["e_form_mae_meV_per_atom"] == pytest.approx(50.0, abs=1e-6)
        # +50 meV/atom pushes every on-hull material off the hull at threshold 0
        assert fold["test"]["tp"] == 0
    # the uncorrected total energy would be off by the oxide + U correction for Fe2O3
    fe2o3 = next(f for f in mp_ds if f["material_id"] == "mp-19770")
    assert model.correction(to_structure(fe2o3)) < -6.0
    assert result["gap"]["e_form_mae_meV_per_atom"]["ratio"] == pytest.approx(1.0)
    loose = score_model("mp", spec("m", kind=kind), table, params(stability_threshold=0.06), {})
    # at 0.06 eV/atom every material is stable in truth; predicted E_hull = E_hull + 0.05 keeps only
    # those with E_hull <= 0.01: all of cluster 0 (NaCl, NiAl, Fe), and LiF but not Fe2O3, MgO of cluster 1
    folds = loose["strategies"]["loco"]["folds"]
    assert folds["0"]["test"]["recall"] == 1.0 and folds["0"]["test"]["prevalence"] == 1.0
    assert folds["1"]["test"]["recall"] == pytest.approx(1 / 3)
    assert folds["1"]["test"]["false_kill_rate"] == pytest.approx(2 / 3)


@pytest.mark.skipif(not REFS.exists(), reason="shared MP reference entries not available")
def test_corrected_model_energies_lose_their_mp2020_correction_before_the_dft_comparison(tmp_path, monkeypatch):
    """CHGNet predicts MPtrj's corrected energy (E_DFT + correction); the frames hold raw DFT."""
    from xtalbench.core.schema import to_structure
    from xtalbench.evaluate.thermo import MP2020FormationEnergy

    monkeypatch.chdir(tmp_path)
    raw = {"mp-1265": -11.9, "mp-19770": -38.5, "mp-1487": -11.2}  # eV, made-up raw DFT totals
    frames = [from_structure(s, frame_id=m, material_id=m, source="test", energy=raw[m]) for m, s, _, _ in mp_structures() if m in raw]
    write_dataset("raw", frames)
    write_split("raw", "random", frames, {0: {f["material_id"]: "test" for f in frames}}, None)
    corrections = {f["frame_id"]: MP2020FormationEnergy(REFS).correction(to_structure(f)) for f in frames}
    assert corrections["mp-19770"] < -1.0 and corrections["mp-1487"] == 0.0  # Fe2O3: oxide + U; NiAl: none

    def table(with_correction: bool) -> pa.Table:
        rows = [{"frame_id": f["frame_id"], "material_id": f["material_id"], "nsites": f["nsites"],
                 "energy": f["energy"] + (corrections[f["frame_id"]] if with_correction else 0.0)} for f in frames]
        return pa.Table.from_pylist(rows, schema=PRED_SCHEMA)

    def mae(kind: str, with_correction: bool) -> float:
        result = score_model("raw", spec("m", kind=kind), table(with_correction), params(), {})
        return result["strategies"]["random"]["mean"]["test"]["energy_mae_meV_per_atom"]

    assert mae("chgnet", with_correction=True) == pytest.approx(0.0, abs=1e-9)
    assert mae("mace-file", with_correction=False) == pytest.approx(0.0, abs=1e-9)
    expected = 1000 * np.mean([abs(corrections[f["frame_id"]]) / f["nsites"] for f in frames])
    assert mae("chgnet", with_correction=False) == pytest.approx(expected, rel=1e-9)
