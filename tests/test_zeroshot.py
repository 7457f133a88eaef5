"""Zero-shot scoring: per-frame sums, CIs and ratios against hand-computed values; conventions;
the MatterSim reader of the shared source; contamination; the stage and leaderboard end to end
with a stand-in model whose errors are known exactly."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ase.units import GPa

from xtalbench.core.project import Paths
from xtalbench.fetch.sources import shared
from xtalbench.fetch.stage import fetch
from xtalbench.models import load_spec
from xtalbench.models.base import Predictor
from xtalbench.zeroshot import contamination as C
from xtalbench.zeroshot.conventions import (
    ConventionError,
    LevelOfTheory,
    hubbard_frame,
    parse_level_of_theory,
    plan,
)
from xtalbench.zeroshot.scores import (
    ERROR_COLUMNS,
    error_ratio,
    frame_error_sums,
    summarize,
)

ROOT = Path(__file__).resolve().parents[1]
MATTERSIM = ROOT.parent / "shared" / "data" / "mattersim-benchmarks"
ALKALI = MATTERSIM / "mpf-alkali-TP.extxyz.gz"
MPTRJ = MATTERSIM / "mptrj-random-1k.extxyz.gz"


# --- scores -----------------------------------------------------------------------------------


def test_frame_error_sums_by_hand():
    stress_pred = np.array([1.0, 0, 0, 0, 0, -2.0]) * GPa  # 1 and -2 GPa
    sums = frame_error_sums("f", 2, -10.0, -10.2, [[1, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 3, 4]], stress_pred, np.zeros(6))
    assert sums["e_abs"] == pytest.approx(0.1) and sums["e_sq"] == pytest.approx(0.01) and sums["e_count"] == 1
    assert sums["f_abs"] == pytest.approx(8.0) and sums["f_count"] == 6  # |1| + |3| + |4|
    assert sums["f_norm"] == pytest.approx(6.0) and sums["f_atoms"] == 2  # ‖(1,0,0)‖ + ‖(0,-3,-4)‖ = 1 + 5
    assert sums["s_abs"] == pytest.approx(3.0) and sums["s_count"] == 6
    missing = frame_error_sums("g", 1, None, -1.0, None, [[0, 0, 0]], None, None)
    assert all(missing[c] == 0 for c in ERROR_COLUMNS)
    with pytest.raises(ValueError, match="record 'h', field 'forces'"):
        frame_error_sums("h", 2, 0, 0, [[0, 0, 0]], [[0, 0, 0], [0, 0, 0]], None, None)


def _errors(energy_errors: list[float], prefix: str = "m") -> pd.DataFrame:
    rows = []
    for i, err in enumerate(energy_errors):
        sums = frame_error_sums(f"{prefix}{i}", 1, err, 0.0, [[err, 0, 0]], [[0, 0, 0]], None, None)
        rows.append({"frame_id": f"{prefix}{i}", "material_id": f"{prefix}{i}", **sums})
    return pd.DataFrame(rows)


def test_summarize_mae_rmse_and_ci():
    out = summarize(_errors([0.1, -0.3]), n_bootstrap=200, seed=0)
    assert out["energy_mae_meV_per_atom"] == pytest.approx(200.0)  # (100 + 300) / 2
    assert out["energy_rmse_meV_per_atom"] == pytest.approx(1000 * np.sqrt((0.01 + 0.09) / 2))
    assert out["force_mae_component_meV_per_A"] == pytest.approx(1000 * 0.4 / 6)  # 6 components, 2 non-zero
    assert out["force_mae_vector_norm_meV_per_A"] == pytest.approx(200.0)
    lo, hi = out["energy_mae_meV_per_atom_ci"]
    assert 100.0 <= lo <= 200.0 <= hi <= 300.0  # resamples of {100, 300}
    assert out["stress_mae_GPa"] is None and out["stress_mae_GPa_ci"] is None
    flat = summarize(_errors([0.05] * 10), n_bootstrap=100)
    assert flat["energy_mae_meV_per_atom_ci"] == pytest.approx([50.0, 50.0])


def test_unseen_seen_ratio_with_ci():
    result = error_ratio(_errors([0.3] * 8, "u"), _errors([0.1, -0.1] * 5, "s"), "energy_mae_meV_per_atom", n_bootstrap=200)
    assert result["ratio"] == pytest.approx(3.0) and result["ci"] == pytest.approx([3.0, 3.0])
    spread = error_ratio(_errors([0.2, 0.4] * 4, "u"), _errors([0.1] * 6, "s"), "energy_mae_meV_per_atom", n_bootstrap=300)
    assert spread["ratio"] == pytest.approx(3.0)
    assert 2.0 <= spread["ci"][0] < 3.0 < spread["ci"][1] <= 4.0


# --- conventions ------------------------------------------------------------------------------


def test_level_of_theory_parsing_and_plan():
    assert parse_level_of_theory("PBE/PBE+U, raw", "x") == LevelOfTheory("PBE/PBE+U", "raw")
    with pytest.raises(ConventionError, match=r"datasets\.bad\.level_of_theory"):
        parse_level_of_theory("PBE", "bad")
    with pytest.raises(ConventionError, match="missing"):
        parse_level_of_theory(None, "none")
    data = LevelOfTheory("PBE/PBE+U", "raw")
    chg = plan(LevelOfTheory("PBE/PBE+U", "mp2020-corrected"), data, "chgnet", "d")
    assert chg.remove_mp2020 and chg.score_energy and not chg.separate_hubbard and "subtracted" in chg.notes[0]
    matpes = plan(LevelOfTheory("PBE", "raw"), data, "tensornet", "d")
    assert matpes.separate_hubbard and not matpes.remove_mp2020 and any("hubbard_u" in n for n in matpes.notes)
    assert not plan(LevelOfTheory("none", "empirical"), data, "emt", "d").score_energy
    assert not plan(LevelOfTheory("r2SCAN", "raw"), data, "scan", "d").score_energy


def test_hubbard_chemistries_follow_mp():
    assert hubbard_frame([26, 26, 8, 8, 8])  # Fe2O3: U on Fe
    assert hubbard_frame([27, 9, 9])  # CoF2
    assert not hubbard_frame([26, 16])  # FeS: MP uses no U for sulfides
    assert not hubbard_frame([11, 17])  # NaCl


def test_chgnet_convention_from_its_spec():
    from xtalbench.zeroshot.conventions import model_level_of_theory

    assert model_level_of_theory(load_spec("chgnet", ROOT / "models")).energy_convention == "mp2020-corrected"


# --- the shared source's MatterSim reader -------------------------------------------------------


def _file_frames(path: Path) -> list[dict]:
    """Independent reading: energy and ids straight from the comment lines."""
    out = []
    with gzip.open(path, "rt") as handle:
        for line in handle:
            if line.startswith("Lattice="):
                energy = float(re.search(r"(?<![_a-z])energy=(\S+)", line).group(1))
                ids = dict(re.findall(r"(\w+_id)=(\S+)", line))
                stress = [float(x) for x in re.search(r'stress="([^"]+)"', line).group(1).split()]
                out.append({"energy": energy, "ids": ids, "stress": stress})
    return out


def test_mattersim_sample_is_seeded_and_in_file_order():
    assert shared.count_extxyz_frames(ALKALI) == 460  # the data README's count
    a = shared.sample_indices(460, 7, 3)
    assert a == shared.sample_indices(460, 7, 3) and len(a) == 7 and a != shared.sample_indices(460, 7, 4)
    assert shared.sample_indices(460, None, 0) is None and shared.sample_indices(460, 500, 0) is None
    records = list(shared.read_records({"path": str(ALKALI), "sample": 7, "seed": 3}))
    truth = _file_frames(ALKALI)
    assert [r["frame_id"] for r in records] == [truth[i]["ids"]["internal_id"] for i in sorted(a)]
    for r, i in zip(records, sorted(a)):
        assert r["energy"] == pytest.approx(truth[i]["energy"])
        xx, yy, zz = truth[i]["stress"][0], truth[i]["stress"][4], truth[i]["stress"][8]
        assert r["stress"][:3] == pytest.approx([xx, yy, zz])  # eV/Å³ kept, ASE sign
        assert json.loads(r["meta"])["source"] == "Internal"


def test_mptrj_frames_keep_mp_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = fetch("mptrj", {"source": "shared", "path": str(MPTRJ), "sample": 4, "seed": 0}, Paths("mptrj"))
    assert summary["read"] == 4 and summary["kept"] == 4
    import pyarrow.parquet as pq

    frames = pq.read_table(Paths("mptrj").frames).to_pylist()
    for row in frames:
        assert row["material_id"].startswith("mp-") and row["frame_id"].startswith("mp-")  # MPtrj snapshot ids name the task
    version = json.loads(Paths("mptrj").data_version.read_text())
    assert version["source_details"]["sample"] == 4 and version["source_details"]["set"] == "mptrj-random-1k"


# --- contamination ------------------------------------------------------------------------------


def test_contamination_by_database_and_id():
    chgnet = load_spec("chgnet", ROOT / "models")
    assert C.by_database(chgnet, "MPtrj")["overlap"] == "same"
    assert C.by_database(chgnet, "Alexandria")["overlap"] == "different"
    by_id = C.by_id(chgnet, ["mp-1", "mp-2", "agm3", "x-4"])
    assert by_id["method"] == "database-version" and by_id["fraction"] == pytest.approx(0.5)


# --- stage and leaderboard with a stand-in model ------------------------------------------------


class Shifted(Predictor):
    """Returns the labels plus known errors: +shift eV/atom, +dfx eV/Å on every atom's x."""

    batched = True

    def __init__(self, frames: dict[str, dict], shift: float, dfx: float):
        super().__init__("stand-in", device="cpu", dtype="float64", progress=False)
        self.frames, self.shift, self.dfx = frames, shift, dfx

    def _predict_batch(self, rows):
        energy, forces, stress = [], [], []
        for r in rows:
            t = self.frames[r["frame_id"]]
            n = t["nsites"]
            energy.append(t["energy"] + self.shift * n)
            f = np.asarray(t["forces"]).reshape(n, 3).copy()
            f[:, 0] += self.dfx
            forces.append(f)
            stress.append(np.asarray(t["stress"]))
        return {"energy": np.array(energy), "forces": forces, "stress": np.array(stress)}


def test_stage_and_leaderboard_recover_known_errors(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from xtalbench.zeroshot.leaderboard import leaderboard
    from xtalbench.zeroshot.stage import zeroshot

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "stand-in.yaml").write_text(
        "name: stand-in\nkind: ase\ncalculator: ase.calculators.emt.EMT\nlicence: MIT\nfunctional: PBE/PBE+U\nenergy_convention: raw\n"
        "training_set: {name: MPtrj, database: Materials Project}\n"
    )
    datasets = {
        "seen": {"source": "shared", "path": str(MPTRJ), "sample": 6, "seed": 1, "level_of_theory": "PBE/PBE+U, raw"},
        "unseen": {"source": "shared", "path": str(ALKALI), "sample": 6, "seed": 1, "level_of_theory": "PBE/PBE+U, raw"},
    }
    params = {"datasets": datasets, "zeroshot": {"datasets": ["seen", "unseen"], "models": ["stand-in"], "seen_sets": {"MPtrj": "seen"},
                                                 "n_bootstrap": 50}}  # fmt: skip
    shifts = {"seen": (0.02, 0.03), "unseen": (0.06, 0.09)}
    for name, config in datasets.items():
        fetch(name, config, Paths(name))
        frames = {r["frame_id"]: r for r in pq.read_table(Paths(name).frames).to_pylist()}
        metrics = zeroshot(name, "stand-in", params, models_dir="models", progress=False, predictor=Shifted(frames, *shifts[name]))
        s = metrics["scores"]
        assert s["energy_mae_meV_per_atom"] == pytest.approx(1000 * shifts[name][0])
        assert s["force_mae_vector_norm_meV_per_A"] == pytest.approx(1000 * shifts[name][1])
        assert s["force_mae_component_meV_per_A"] == pytest.approx(1000 * shifts[name][1] / 3)
        assert s["stress_mae_GPa"] == pytest.approx(0.0, abs=1e-9)
        assert metrics["conventions"]["mp2020_removed_from_predictions"] is False
    board = leaderboard(params)
    ratio = board["models"]["stand-in"]["ratios"]["unseen"]
    assert ratio["energy_mae_meV_per_atom"]["ratio"] == pytest.approx(3.0)
    assert ratio["force_mae_vector_norm_meV_per_A"]["ci"] == pytest.approx([3.0, 3.0])
    assert board["models"]["stand-in"]["seen_is_training_set"] is True
    assert board["models"]["stand-in"]["contamination"]["seen"]["by_database"]["overlap"] == "same"
    text = (tmp_path / "metrics" / "zeroshot" / "leaderboard.md").read_text()
    assert "| stand-in | seen | yes | unseen | 3.00 [3.00, 3.00]" in text
    assert "MatterSim-v1-1M" not in text  # no anchors for sets named seen/unseen
    # a constant shift is all reference offset: nothing left after removing the median signed error
    assert board["models"]["stand-in"]["datasets"]["unseen"]["energy_mae_after_constant_offset_meV_per_atom"] == pytest.approx(0.0, abs=1e-9)
    # a model its YAML flags as unreliable is flagged in every table, with its known issue in the notes
    spec_file = tmp_path / "models" / "stand-in.yaml"
    spec_file.write_text(spec_file.read_text() + "status: unreliable\nknown_issues: energies of compounds are wrong\n")
    for name in datasets:
        frames = {r["frame_id"]: r for r in pq.read_table(Paths(name).frames).to_pylist()}
        zeroshot(name, "stand-in", params, models_dir="models", progress=False, predictor=Shifted(frames, *shifts[name]))
    leaderboard(params)
    text = (tmp_path / "metrics" / "zeroshot" / "leaderboard.md").read_text()
    assert "| stand-in ⚠ unreliable | seen | yes | unseen | 3.00 [3.00, 3.00]" in text
    assert "| stand-in |" not in text and "⚠ unreliable: energies of compounds are wrong" in text


def test_elemental_offsets_recover_per_element_references():
    from xtalbench.zeroshot.diagnose import elemental_offsets

    rng = np.random.default_rng(0)
    numbers = [list(rng.choice([1, 8, 26, 29], size=rng.integers(2, 7))) for _ in range(40)]
    offsets = {1: 0.1, 8: -0.5, 26: 0.3, 29: 0.0}  # eV/atom per element: a reference-energy convention
    y = [np.mean([offsets[z] for z in row]) for row in numbers]
    out = elemental_offsets(y, numbers)
    assert out["mae_meV_per_atom"] > 100 and out["loo_mae_after_elemental_offsets_meV_per_atom"] == pytest.approx(0.0, abs=1e-6)
    assert out["largest_offsets_meV_per_atom"]["O"] == pytest.approx(-500.0)
    noisy = elemental_offsets(np.array(y) + rng.normal(0, 0.02, len(y)), numbers)
    assert 10 < noisy["loo_mae_after_elemental_offsets_meV_per_atom"] < 30  # ~ the noise (0.8 × 20 meV), slightly inflated by LOO


def test_matpes_models_have_no_seen_set_here_and_say_so():
    from xtalbench.models.registry import parse_spec
    from xtalbench.zeroshot.leaderboard import seen_set
    from xtalbench.zeroshot.params import ZeroshotParams

    matpes = parse_spec({"name": "tn", "kind": "ase", "calculator": "ase.calculators.emt.EMT", "licence": "BSD",
                         "training_set": {"name": "MatPES-PBE v2025.1", "database": "MatPES"}})  # fmt: skip
    mptrj = load_spec("chgnet", ROOT / "models")
    cfg = ZeroshotParams(datasets=["mptrj-random-1k", "mpf-TP"], seen_sets={"MPtrj": "mptrj-random-1k"}, reference_set="mptrj-random-1k")
    assert seen_set("chgnet", mptrj.training_set.name, cfg)[:2] == ("mptrj-random-1k", True)
    dataset, inside, why = seen_set("tn", matpes.training_set.name, cfg)
    assert (dataset, inside) == ("mptrj-random-1k", False) and "seen set differs" in why
    assert C.by_database(matpes, "MPtrj")["overlap"] == "related"
    assert C.by_database(matpes, "Alexandria")["overlap"] == "different"


def test_a_frame_the_model_cannot_take_is_left_out_with_its_reason(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from xtalbench.zeroshot.stage import zeroshot

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "stand-in.yaml").write_text(
        "name: stand-in\nkind: ase\ncalculator: ase.calculators.emt.EMT\nlicence: MIT\nfunctional: PBE/PBE+U\nenergy_convention: raw\n"
        "training_set: {name: MPtrj, database: Materials Project}\n"
    )
    config = {"source": "shared", "path": str(ALKALI), "sample": 5, "seed": 2, "level_of_theory": "PBE/PBE+U, raw"}
    params = {"datasets": {"s": config}, "zeroshot": {"datasets": ["s"], "models": ["stand-in"], "n_bootstrap": 20}}
    fetch("s", config, Paths("s"))
    frames = {r["frame_id"]: r for r in pq.read_table(Paths("s").frames).to_pylist()}
    bad = sorted(frames)[1]

    class Picky(Shifted):
        def _predict_batch(self, rows):
            if any(r["frame_id"] == bad for r in rows):
                raise ValueError("2 isolated atom(s)")
            return super()._predict_batch(rows)

    metrics = zeroshot("s", "stand-in", params, models_dir="models", progress=False, predictor=Picky(frames, 0.01, 0.0))
    assert metrics["frames"]["model_failures"] == {bad: "ValueError: 2 isolated atom(s)"}
    assert metrics["scores"]["frames"] == 4 and metrics["scores"]["energy_mae_meV_per_atom"] == pytest.approx(10.0)
    assert any("left out" in note for note in metrics["notes"])


def test_plus_u_frames_scored_apart_or_refused():
    from xtalbench.zeroshot.params import ZeroshotParams
    from xtalbench.zeroshot.stage import score

    errors = pd.concat([_errors([0.01] * 4, "g"), _errors([0.5] * 2, "u")], ignore_index=True)
    errors["hubbard"] = [False] * 4 + [True] * 2
    separate = score(errors, True, ZeroshotParams(n_bootstrap=20))
    assert separate["headline_subset"] == "gga" and separate["scores"]["energy_mae_meV_per_atom"] == pytest.approx(10.0)
    assert separate["subsets"]["hubbard_u"]["energy_mae_meV_per_atom"] == pytest.approx(500.0)
    refused = score(errors, True, ZeroshotParams(n_bootstrap=20, hubbard_policy="refuse"))
    assert "hubbard_u" not in refused["subsets"]
    blended = score(errors, False, ZeroshotParams(n_bootstrap=20))
    assert blended["headline_subset"] == "all" and blended["scores"]["energy_mae_meV_per_atom"] == pytest.approx(1000 * (0.04 + 1.0) / 6)


def test_a_model_that_covers_none_of_a_sets_elements_scores_nothing_without_failing():
    """Every frame skipped (the pipeline-trained MACE on Alexandria): typed empty errors, None scores, no CI."""
    from xtalbench.zeroshot.params import ZeroshotParams
    from xtalbench.zeroshot.stage import frame_errors, score

    frames = pd.DataFrame({"frame_id": ["a"], "material_id": ["m"], "nsites": [1], "numbers": [[8]], "energy": [-1.0],
                           "forces": [[0.0, 0.0, 0.0]], "stress": [None]})  # fmt: skip
    predictions = pd.DataFrame(columns=["frame_id", "energy", "forces", "stress"])
    errors, failures = frame_errors(frames, predictions, remove_mp2020=False, score_energy=True, references="unused")
    assert len(errors) == 0 and errors["hubbard"].dtype == bool and not failures
    out = score(errors, separate_hubbard=True, cfg=ZeroshotParams(n_bootstrap=10))
    assert out["scores"]["frames"] == 0 and out["scores"]["energy_mae_meV_per_atom"] is None
    assert out["scores"]["energy_mae_meV_per_atom_ci"] is None and out["subsets"]["hubbard_u"]["frames"] == 0
