"""Model registry and predictors: YAML validation, batched MACE == MACECalculator, EMT, CHGNet, errors."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
import mace  # noqa: F401  # before e3nn/torch loading (weights-only trap)
import numpy as np
import pytest
import torch
import yaml

from xtalbench.core.schema import to_atoms
from xtalbench.models import (
    ModelLoadError,
    ModelSpecError,
    UnsupportedElementError,
    load_all,
    load_model,
    load_spec,
)
from xtalbench.models.registry import KINDS, parse_spec

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
GESBTE = SHARED / "models" / "mace_swa_GeSbTe.model"
MODELS = ROOT / "models"


def rocksalt_frames(n: int, seed: int = 0, elements=(32, 51, 52), a: float = 6.0, noise: float = 0.1) -> list[dict]:
    """Small random rock-salt-like cells of the given elements, rattled; sizes vary (8 or 16 atoms)."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        atoms = bulk("NaCl", "rocksalt", a=a, cubic=True).repeat((1, 1, 1 + i % 2))
        atoms.cell = atoms.cell.array * (1 + 0.02 * rng.normal(size=(3, 3)))
        numbers = rng.choice(list(elements), size=len(atoms))
        positions = atoms.positions + rng.normal(0, noise, atoms.positions.shape)
        frames.append(
            {"frame_id": f"rs-{i:03d}", "material_id": f"m-{i:03d}", "nsites": len(atoms), "numbers": numbers.tolist(),
             "positions": positions.ravel().tolist(), "lattice": atoms.cell.array.ravel().tolist(), "pbc": [True, True, True]}
        )  # fmt: skip
    return frames


VALID = {
    "name": "m",
    "kind": "mace-file",
    "checkpoint": "x.model",
    "licence": "MIT",
    "training_set": {"name": "MPtrj", "database": "Materials Project", "version": "2021.2.8"},
}


def test_registry_loads_every_yaml_in_models_dir():
    specs = load_all(MODELS)
    files = sorted(p.stem for p in MODELS.glob("*.yaml"))
    assert sorted(specs) == files and len(files) >= 5
    for name, spec in specs.items():
        assert spec.name == name and spec.kind in KINDS and spec.licence
        assert spec.resolve("mp20").energy_kind in ("total", "formation")
    assert {"chgnet", "mace-tiny"} <= set(specs)
    tiny = specs["mace-tiny"]
    assert tiny.resolve("mp20").energy_kind == "formation" and tiny.resolve("mp-frames").energy_kind == "total"
    assert tiny.checkpoint_for("mp20", "loco", 2) == Path("models/trained/mp20/loco-2.model")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": None}, "kind"),
        ({"kind": "sklearn"}, "kind"),
        ({"checkpoint": None}, "checkpoint"),
        ({"energy_kind": "per_atom"}, "energy_kind"),
        ({"colour": "red"}, "colour"),
        ({"elements": ["Ge", "Xx"]}, "elements"),
        ({"training_set": {"name": "MPtrj"}}, "training_set.database"),
        ({"functional": "LDA"}, "functional"),
        ({"energy_convention": "corrected"}, "energy_convention"),
        ({"status": "unreliable"}, "known_issues"),
        ({"status": "broken", "known_issues": "x"}, "status"),
        ({"parameters": -5}, "parameters"),
        ({"environment": {"name": "e", "packages": ["matgl>=4"]}}, "environment"),
    ],
)
def test_malformed_spec_is_rejected_naming_the_field(tmp_path, change, field):
    data = {**VALID, **change}
    data = {k: v for k, v in data.items() if v is not None}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ModelSpecError) as info:
        load_spec(path)
    assert info.value.field == field and str(path) in str(info.value) and repr(field) in str(info.value)


def test_spec_name_must_match_file_and_valid_spec_parses(tmp_path):
    assert parse_spec(VALID, "inline").checkpoint == "x.model"
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(VALID))
    with pytest.raises(ModelSpecError, match="differs from the file name"):
        load_spec(path)


@pytest.fixture(scope="module")
def gesbte():
    return load_model(load_spec("mace-gesbte", MODELS), device="cpu", dtype="float64", checkpoint=GESBTE, progress=False)


def test_batched_mace_equals_mace_calculator_per_structure(gesbte):
    from mace.calculators import MACECalculator

    frames = rocksalt_frames(7)
    predictor = gesbte
    out = predictor.predict(frames, batch_size=3)  # 3 batches, the last one short
    calc = MACECalculator(model_paths=str(GESBTE), device="cpu", default_dtype="float64")
    assert out["energy"].shape == (7,) and out["stress"].shape == (7, 6)
    for i, frame in enumerate(frames):
        atoms = to_atoms(frame, with_labels=False)
        atoms.calc = calc
        np.testing.assert_allclose(out["energy"][i], atoms.get_potential_energy(), rtol=0, atol=1e-8)
        np.testing.assert_allclose(out["forces"][i], atoms.get_forces(), rtol=0, atol=1e-8)
        np.testing.assert_allclose(out["stress"][i], atoms.get_stress(), rtol=0, atol=1e-9)
    # a different batch size gives the same numbers
    again = predictor.predict(frames[::-1], batch_size=7)
    np.testing.assert_allclose(again["energy"][::-1], out["energy"], atol=1e-8)


def test_unknown_element_names_frame_and_element(gesbte):
    frames = rocksalt_frames(2)
    frames[1]["numbers"][0] = 26  # Fe: not in the GeSbTe model
    predictor = gesbte
    assert predictor.supported_numbers == frozenset({32, 51, 52})
    with pytest.raises(UnsupportedElementError, match=r"frame 'rs-001'.*element Fe.*mace-gesbte"):
        predictor.predict(frames)


def test_missing_mace_file_is_a_clear_error(tmp_path):
    spec = parse_spec({**VALID, "checkpoint": str(tmp_path / "nope.model")}, "inline")
    with pytest.raises(ModelLoadError, match="nope.model does not exist"):
        load_model(spec)


def test_ase_kind_gives_emt_numbers():
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from xtalbench.core.schema import from_atoms

    frames = []
    for i, (element, a) in enumerate([("Cu", 3.6), ("Al", 4.05), ("Ni", 3.52)]):
        atoms = bulk(element, "fcc", a=a, cubic=True)
        atoms.rattle(0.05, seed=i)
        frames.append(from_atoms(atoms, frame_id=f"f{i}", material_id=f"m{i}", source="test"))
    out = load_model(load_spec("emt", MODELS), progress=False).predict(frames)
    for i, frame in enumerate(frames):
        atoms = to_atoms(frame, with_labels=False)
        atoms.calc = EMT()
        assert out["energy"][i] == pytest.approx(atoms.get_potential_energy(), abs=1e-12)
        np.testing.assert_allclose(out["forces"][i], atoms.get_forces(), atol=1e-12)
        np.testing.assert_allclose(out["stress"][i], atoms.get_stress(), atol=1e-12)
    assert np.abs(out["forces"][0]).max() > 1e-3  # rattled: forces are not trivially zero


def test_foundation_download_failure_names_the_model(tmp_path, monkeypatch):
    import urllib.error

    from mace.calculators import foundations_models

    def offline(url, filename, timeout=0):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # an empty cache: mace must download
    monkeypatch.setattr(foundations_models, "_urlretrieve_with_timeout", offline)
    spec = load_spec("mace-mpa-0", MODELS)
    with pytest.raises(ModelLoadError) as info:
        load_model(spec, dtype="float32")
    message = str(info.value)
    assert "'mace-mpa-0'" in message and "medium-mpa-0" in message
    assert str(tmp_path / "mace") in message and "checkpoint" in message and "URLError" in message


def test_foundation_unknown_name_is_rejected():
    spec = parse_spec({**VALID, "kind": "mace-foundation", "checkpoint": None, "foundation": "huge"}, "inline")
    with pytest.raises(ModelLoadError, match="unknown mace_mp foundation model 'huge'"):
        load_model(spec)


def test_chgnet_matches_its_ase_calculator():
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    frames = rocksalt_frames(2, elements=(11, 17), a=5.64, noise=0.05)  # NaCl
    predictor = load_model(load_spec("chgnet", MODELS), progress=False)
    out = predictor.predict(frames)
    calc = CHGNetCalculator(model=CHGNet.load(verbose=False), use_device="cpu")
    for i, frame in enumerate(frames):
        atoms = to_atoms(frame, with_labels=False)
        atoms.calc = calc
        assert out["energy"][i] == pytest.approx(atoms.get_potential_energy(), abs=1e-4)
        np.testing.assert_allclose(out["forces"][i], atoms.get_forces(), atol=1e-4)
        np.testing.assert_allclose(out["stress"][i], atoms.get_stress(), atol=1e-5)
    assert out["energy"][0] / frames[0]["nsites"] < -2.0  # NaCl: a few eV/atom bound (total, not per atom)


def test_device_auto_and_unavailable_cuda():
    from xtalbench.core.device import hardware_record, resolve_device

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(SystemExit, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="CUDA is not available"):
            resolve_device("cuda")
    record = hardware_record("cpu", "float32")
    assert record["torch_version"] == torch.__version__ and record["dtype"] == "float32" and record["device_name"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mace_on_gpu_matches_cpu():
    frames = rocksalt_frames(4)
    spec = load_spec("mace-gesbte", MODELS)
    cpu = load_model(spec, device="cpu", checkpoint=GESBTE, progress=False).predict(frames)
    gpu = load_model(spec, device="cuda", checkpoint=GESBTE, progress=False).predict(frames)
    np.testing.assert_allclose(gpu["energy"], cpu["energy"], atol=1e-6)
