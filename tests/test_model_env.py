"""Model environments and workers: pin validation, build (tiny, offline), run, failures.

The heavy tests (SevenNet, matgl) use the environments `make envs` builds under `.venvs/` and
skip with a message naming the command when they are not built; everything else is offline and
builds only a tiny environment from a wheel made here.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from xtalbench.core.errors import XtalbenchError
from xtalbench.core.schema import from_atoms, to_atoms
from xtalbench.models import (
    ModelLoadError,
    ModelSpecError,
    UnsupportedElementError,
    load_model,
    load_spec,
)
from xtalbench.models.env import (
    COMPLETE,
    Environment,
    EnvironmentBuildError,
    EnvironmentSpecError,
    build_environment,
    envs_dir,
    is_built,
    parse_environment,
    python_of,
)
from xtalbench.models.registry import parse_spec, spec_data
from xtalbench.models.worker import EnvPredictor, ModelWorkerError

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


# --- the `environment:` block ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "needle"),
    [
        ({"name": "x", "packages": ["sevenn>=0.13"]}, "'sevenn>=0.13' is not an exact pin"),
        ({"name": "x", "packages": ["sevenn"]}, "'sevenn' is not an exact pin"),
        ({"name": "x", "packages": ["torch==2.13.0"]}, "pin torch with `environment.torch`"),
        ({"name": "../x", "packages": []}, "environment.name"),
        ({"name": "x", "pakages": []}, "environment.pakages"),
        ({"name": "x", "torch": "latest"}, "environment.torch"),
    ],
)
def test_environment_block_is_validated_naming_the_field(block, needle):
    with pytest.raises(EnvironmentSpecError, match=None) as info:
        parse_environment(block, "m.yaml")
    assert needle in str(info.value) and "m.yaml" in str(info.value)
    assert isinstance(info.value, XtalbenchError)


def test_model_yaml_with_a_bad_environment_names_the_environment_field():
    data = {"name": "m", "kind": "sevennet", "checkpoint": "7net-0", "licence": "GPL-3.0-only",
            "training_set": {"name": "MPtrj", "database": "Materials Project"},
            "environment": {"name": "m", "packages": ["sevenn~=0.13"]}}  # fmt: skip
    with pytest.raises(ModelSpecError) as info:
        parse_spec(data, "m.yaml")
    assert info.value.field == "environment" and "sevenn~=0.13" in str(info.value)


def test_environment_key_is_a_hash_of_the_pins():
    a = Environment("e", ("sevenn==0.13.0",))
    assert a.key() == Environment("e", ("sevenn==0.13.0",)).key()  # deterministic
    assert len(a.key()) == 12 and int(a.key(), 16) >= 0
    assert a.key() != Environment("e", ("sevenn==0.12.0",)).key()  # any pin changes the folder
    assert a.key() != Environment("e", ("sevenn==0.13.0",), torch="2.12.0").key()
    assert a.key() != a.key(worker=False)  # the worker's own pins count too
    assert Environment("e", ("a==1", "b==2")).key() == Environment("e", ("b==2", "a==1")).key()  # order-free
    assert a.path("/r") == Path("/r") / f"e-{a.key()}"


def test_every_model_yaml_records_level_of_theory_and_env_models_pin_exactly():
    for path in sorted(MODELS.glob("*.yaml")):
        spec = load_spec(path, MODELS)
        assert spec.functional != "unknown" or spec.kind in ("mace-file",), f"{path.name}: functional not recorded"
        assert spec.energy_convention is not None, f"{path.name}: energy_convention not recorded"
        if spec.kind in ("sevennet", "matgl"):
            assert spec.environment is not None and spec.environment.torch == "2.13.0"
            assert all("==" in p for p in spec.environment.packages)
            assert spec.evidence, f"{path.name}: the energy convention needs its evidence"
    # the two stacks that cannot share one environment do not
    assert load_spec("sevennet-0", MODELS).environment.key() != load_spec("m3gnet-mp-2021", MODELS).environment.key()
    assert load_spec("chgnet", MODELS).mp2020_corrected is True
    assert load_spec("m3gnet-matpes-pbe", MODELS).functional == "PBE"


# --- build: a tiny environment from a wheel made here (offline, no torch) -------------------------


def _wheel(folder: Path, name: str = "xtbtiny", version: str = "1.0") -> Path:
    """A minimal pure-Python wheel: one module `xtbtiny` with VALUE = 42."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": b"VALUE = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return wheel


def test_build_a_tiny_environment_once_then_reuse_it(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels)
    env = Environment("tiny", ("xtbtiny==1.0",), torch=None, pip_args=("--no-index", "--find-links", str(wheels)))
    root = tmp_path / "envs"
    assert not is_built(env, root, worker=False)
    path = build_environment(env, root, worker=False, quiet=True)
    assert path == root / f"tiny-{env.key(worker=False)}" and (path / COMPLETE).exists()
    assert not path.with_name(path.name + ".failed.log").exists()
    import subprocess

    out = subprocess.run([str(python_of(path)), "-c", "import xtbtiny; print(xtbtiny.VALUE)"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "42"
    assert "xtbtiny==1.0" in (path / "freeze.txt").read_text()
    stamp = (path / COMPLETE).stat().st_mtime_ns
    assert build_environment(env, root, worker=False, quiet=True) == path  # cached: no rebuild
    assert (path / COMPLETE).stat().st_mtime_ns == stamp


def test_a_pin_that_cannot_be_installed_names_the_package_and_leaves_nothing_built(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels)
    env = Environment("bad", ("xtbtiny==1.0", "xtb-no-such-package==0.0.1"), torch=None, pip_args=("--no-index", "--find-links", str(wheels)))
    root = tmp_path / "envs"
    with pytest.raises(EnvironmentBuildError) as info:
        build_environment(env, root, worker=False, quiet=True)
    assert info.value.package == "xtb-no-such-package==0.0.1"
    assert "'xtb-no-such-package==0.0.1'" in str(info.value) and "'bad'" in str(info.value)
    assert not is_built(env, root, worker=False) and not env.path(root, worker=False).exists()
    assert info.value.log == root / f"bad-{env.key(worker=False)}.failed.log"
    assert "xtb-no-such-package" in info.value.log.read_text()


def test_an_unbuilt_environment_is_a_clear_error_when_building_is_off(tmp_path, monkeypatch):
    from xtalbench.models.env import require_environment

    monkeypatch.setenv("XTALBENCH_ENVS", str(tmp_path))
    env = Environment("never", ("sevenn==0.13.0",))
    with pytest.raises(EnvironmentBuildError, match=r"'m'.*not built.*make envs"):
        require_environment(env, "m", build=False)


# --- the worker, run here with this interpreter (no build needed) ------------------------------


CALCS = '''
import os, sys
from ase.calculators.emt import EMT

class Noisy(EMT):
    """EMT that prints to stdout on every call: must not corrupt the worker's protocol."""
    def calculate(self, *args, **kwargs):
        print("noise on stdout " * 20)
        super().calculate(*args, **kwargs)

class Crash(EMT):
    def calculate(self, *args, **kwargs):
        print("about to crash", file=sys.stderr, flush=True)
        os._exit(3)
'''


def _rattled(n: int = 5) -> list[dict]:
    from ase.build import bulk

    frames = []
    for i in range(n):
        element, a = [("Cu", 3.6), ("Al", 4.05), ("Ni", 3.52)][i % 3]
        atoms = bulk(element, "fcc", a=a, cubic=True).repeat((1, 1, 1 + i % 2))
        atoms.rattle(0.05, seed=i)
        frames.append(from_atoms(atoms, frame_id=f"f{i}", material_id=f"m{i}", source="test"))
    return frames


def _ase_spec(calculator: str, name: str = "w") -> object:
    return parse_spec(
        {"name": name, "kind": "ase", "calculator": calculator, "licence": "MIT", "functional": "none",
         "energy_convention": "empirical", "elements": ["Cu", "Al", "Ni"],
         "training_set": {"name": "none", "database": "none"}},
        "inline",
    )  # fmt: skip


@pytest.fixture
def calcs(tmp_path, monkeypatch):
    (tmp_path / "xtb_test_calcs.py").write_text(CALCS)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the worker inherits it, after xtalbench's src
    return tmp_path


def test_worker_gives_the_in_process_numbers_bit_for_bit(calcs):
    from ase.calculators.emt import EMT

    frames = _rattled(5)
    worker = EnvPredictor(_ase_spec("xtb_test_calcs.Noisy"), python=sys.executable, progress=False)
    try:
        assert worker.supported_numbers == frozenset({13, 28, 29}) and worker.default_batch_size() == 1
        out = worker.predict(frames)
        table_out = worker.predict(pa.Table.from_pylist(frames), batch_size=2)  # a table works the same
        with pytest.raises(UnsupportedElementError, match=r"frame 'f0'.*element Fe"):
            worker.predict([{**frames[0], "numbers": [26] * frames[0]["nsites"]}])
    finally:
        worker.close()
    assert worker.process.poll() == 0  # closed cleanly
    for i, frame in enumerate(frames):
        atoms = to_atoms(frame, with_labels=False)
        atoms.calc = EMT()
        assert out["energy"][i] == atoms.get_potential_energy()  # exact: Arrow carries float64 bits
        np.testing.assert_array_equal(out["forces"][i], atoms.get_forces())
        np.testing.assert_array_equal(out["stress"][i], atoms.get_stress())
        assert table_out["energy"][i] == out["energy"][i]
    assert np.abs(out["forces"][0]).max() > 1e-3


def test_a_worker_that_dies_is_a_clear_error_quoting_its_log(calcs):
    worker = EnvPredictor(_ase_spec("xtb_test_calcs.Crash"), python=sys.executable, progress=False)
    with pytest.raises(ModelWorkerError) as info:
        worker.predict(_rattled(1))
    message = str(info.value)
    assert "'w'" in message and "died during predict" in message and "exit code 3" in message and "about to crash" in message
    worker.close()


def test_a_killed_worker_is_a_clear_error(calcs):
    worker = EnvPredictor(_ase_spec("ase.calculators.emt.EMT"), python=sys.executable, progress=False)
    worker.process.kill()
    worker.process.wait()
    with pytest.raises(ModelWorkerError, match=r"'w'.*died during predict \(exit code -9\)"):
        worker.predict(_rattled(1))
    worker.close()


def test_a_model_that_cannot_load_in_the_worker_names_it(calcs):
    with pytest.raises(ModelLoadError, match=r"'w'.*xtb_test_calcs\.Missing"):
        EnvPredictor(_ase_spec("xtb_test_calcs.Missing"), python=sys.executable, progress=False)


def test_a_worker_refuses_a_non_editable_install(tmp_path, monkeypatch):
    """Its PYTHONPATH would be the main site-packages (another e3nn, torch): a clear error, no worker."""
    import xtalbench.models.worker as worker

    monkeypatch.setattr(worker, "SRC", tmp_path / "site-packages")
    with pytest.raises(ModelWorkerError, match="install xtalbench editable"):
        EnvPredictor(_ase_spec("ase.calculators.emt.EMT"), python=sys.executable, progress=False)


def test_a_worker_that_cannot_start_names_the_interpreter(tmp_path):
    with pytest.raises(ModelWorkerError, match="cannot start a worker"):
        EnvPredictor(_ase_spec("ase.calculators.emt.EMT"), python=tmp_path / "no-python", progress=False)


# --- the real model environments (built by `make envs`) ------------------------------------------

ENV_MODELS = ["sevennet-0", "tensornet-matpes-pbe"]  # one per environment (the m3gnet ones share matgl's)
ENVS = envs_dir() if envs_dir().is_absolute() else ROOT / envs_dir()  # where load_model looks ($XTALBENCH_ENVS honoured)
_WORKERS: dict = {}


def _env_or_skip(name: str):
    spec = load_spec(name, MODELS)
    if not is_built(spec.environment, ENVS):
        pytest.skip(f"environment of {name} not built at {spec.environment.path(ENVS)}: run `make envs`")
    return spec


def _worker(name: str):
    """One worker per model for the whole module (loading one takes ~10 s)."""
    spec = _env_or_skip(name)
    if name not in _WORKERS:
        cwd = os.getcwd()
        os.chdir(ROOT)  # checkpoints are relative to the repository root
        try:
            _WORKERS[name] = load_model(spec, dtype="float32", progress=False)
        finally:
            os.chdir(cwd)
    return spec, _WORKERS[name]


@pytest.fixture(scope="module", autouse=True)
def _close_workers():
    yield
    for predictor in _WORKERS.values():
        predictor.close()
    _WORKERS.clear()


@pytest.fixture(params=ENV_MODELS)
def env_model(request):
    return _worker(request.param)


def _strained_nacl(eps: float) -> dict:
    from ase.build import bulk

    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=False)
    cell = atoms.cell.array.copy()
    atoms.set_cell(cell @ np.diag([1 + eps, 1.0, 1.0]), scale_atoms=True)
    return from_atoms(atoms, frame_id=f"nacl{eps:+.3f}", material_id="mp-22862", source="test")


def test_env_model_runs_in_its_environment_with_ase_stress_units_and_sign(env_model):
    """Stress against a finite difference of the energy (hand-derived: sigma_xx = dE/d eps_xx / V),
    so the unit (eV/A^3, not GPa) and the sign (ASE: negative under compression) are checked."""
    spec, predictor = env_model
    assert isinstance(predictor, EnvPredictor) and str(spec.environment.path()) in str(predictor.python)
    assert {11, 17, 8, 26} <= set(predictor.supported_numbers)
    h = 0.004
    frames = [_strained_nacl(-h), _strained_nacl(0.0), _strained_nacl(h), _strained_nacl(-0.05)]
    out = predictor.predict(frames)
    volume = abs(np.linalg.det(np.reshape(frames[1]["lattice"], (3, 3))))
    numeric = (out["energy"][2] - out["energy"][0]) / (2 * h) / volume
    assert out["stress"][1][0] == pytest.approx(numeric, abs=2e-4)  # float32 models: ~1e-5 eV/A^3 noise
    assert out["stress"][3][0] < -0.005  # 5 % compressed along x: strongly compressive
    per_atom = out["energy"][1] / 2
    if spec.status == "ok":
        assert -4.5 < per_atom < -2.5  # NaCl: ~-3.4 eV/atom raw PBE (MP mp-22862)
    else:  # the YAML's known issue (NaCl far above -3.4 eV/atom) is still there: update the YAML if this fails
        assert per_atom > -3.0 and "NaCl" in spec.known_issues


def _one_by_one(spec, calculator: str, frames: list[dict]) -> list:
    """[energy, forces, stress] per frame from an ASE calculator built by the code `calculator` (it
    binds `calc`), one structure at a time, in the model's environment (xtalbench's src on its path)."""
    import json
    import subprocess

    script = (
        "import json, sys, numpy as np\n"
        "from ase import Atoms\n"
        f"{calculator}\n"
        "res = []\n"
        "for f in json.load(sys.stdin):\n"
        "    a = Atoms(numbers=f['numbers'], positions=np.reshape(f['positions'], (-1, 3)), cell=np.reshape(f['lattice'], (3, 3)), pbc=True)\n"
        "    a.calc = calc\n"
        "    res.append([a.get_potential_energy(), a.get_forces().ravel().tolist(), a.get_stress().tolist()])\n"
        "print(json.dumps(res))\n"
    )
    python = python_of(spec.environment.path(ENVS))
    payload = json.dumps([{k: np.asarray(fr[k]).tolist() for k in ("numbers", "positions", "lattice")} for fr in frames])
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run([str(python), "-c", script], input=payload, capture_output=True, text=True, check=True, env=env)
    return json.loads(run.stdout.strip().splitlines()[-1])


def _assert_same(out: dict, ref: list, atol_stress: float, atol: float = 2e-4) -> None:
    for i, (energy, forces, stress) in enumerate(ref):
        assert out["energy"][i] == pytest.approx(energy, abs=atol)
        np.testing.assert_allclose(out["forces"][i].ravel(), forces, atol=atol)
        np.testing.assert_allclose(out["stress"][i], stress, atol=atol_stress)


def test_sevennet_batched_equals_its_own_calculator_one_by_one():
    """Batched SevenNet graphs (one forward pass) vs SevenNetCalculator per structure, both in the env."""
    spec, predictor = _worker("sevennet-0")
    frames = [_strained_nacl(0.01), from_atoms(_si(), frame_id="si", material_id="si", source="t")]
    out = predictor.predict(frames, batch_size=4)
    ref = _one_by_one(spec, "from sevenn.calculator import SevenNetCalculator\ncalc = SevenNetCalculator(model='7net-0', device='cpu')", frames)
    _assert_same(out, ref, atol_stress=2e-5)


def _si():
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.43).repeat((2, 1, 1))
    atoms.rattle(0.03, seed=1)
    return atoms


# --- matgl: checkpoints from before matgl moved message aggregation (PR 761) ---------------------

# "Predicted a" of the cubic-crystals table in ../shared/data/models/matgl/M3GNet-MP-2021.2.8-PES/README.md
# (the matgl authors' relaxations with this checkpoint in the matgl of its day).
M3GNET_CARD_LATTICE = {"GaAs": 5.75044, "SrVO3": 3.90005, "CsI": 4.6727, "Au": 4.17198}


def _cubic(name: str, a: float):
    from ase import Atoms
    from ase.build import bulk

    if name == "SrVO3":
        return Atoms("SrVO3", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], cell=[a] * 3, pbc=True)
    structure = {"GaAs": "zincblende", "CsI": "cesiumchloride", "Au": "fcc"}[name]
    return bulk(name, structure, a=a)


def _lattice_constants(predictor) -> dict[str, float]:
    """Minimum of a quartic through E(a) on 0.97..1.03 x the card's a (positions fixed by symmetry)."""
    scale = np.linspace(0.97, 1.03, 13)
    frames = [from_atoms(_cubic(name, a * s), frame_id=f"{name}{s:.3f}", material_id=name, source="t")
              for name, a in M3GNET_CARD_LATTICE.items() for s in scale]  # fmt: skip
    energy = predictor.predict(frames)["energy"].reshape(len(M3GNET_CARD_LATTICE), len(scale))
    result = {}
    for (name, a), e in zip(M3GNET_CARD_LATTICE.items(), energy):
        roots = np.roots(np.polyder(np.polyfit(a * scale, e, 4)))
        real = roots[np.isreal(roots)].real
        result[name] = float(real[np.argmin(abs(real - a))])
    return result


def test_m3gnet_mp_reproduces_the_lattice_constants_of_its_model_card():
    """With `message_aggregation: destination` the checkpoint gives its card's lattice constants to
    0.2 %; loaded as matgl 4.1.2 loads it (no adaptation) CsI and SrVO3 miss by 2-4 %."""
    spec, predictor = _worker("m3gnet-mp-2021")
    assert spec.message_aggregation == "destination" and spec.status == "ok"
    for name, a in _lattice_constants(predictor).items():
        assert a == pytest.approx(M3GNET_CARD_LATTICE[name], rel=2e-3), name
    data = spec_data(spec)
    del data["message_aggregation"]
    cwd = os.getcwd()
    os.chdir(ROOT)  # the checkpoint is relative to the repository root
    try:
        plain = load_model(parse_spec(data, "plain"), dtype="float32", progress=False)
    finally:
        os.chdir(cwd)
    try:
        misses = {name: abs(a / M3GNET_CARD_LATTICE[name] - 1) for name, a in _lattice_constants(plain).items()}
    finally:
        plain.close()
    assert misses["CsI"] > 0.02 and misses["SrVO3"] > 0.01


def _mptrj_frames(n: int) -> list[dict]:
    import gzip

    from ase.io import iread

    path = ROOT.parent / "shared" / "data" / "mattersim-benchmarks" / "mptrj-random-1k.extxyz.gz"
    with gzip.open(path, "rt") as handle:
        return [from_atoms(a, frame_id=f"mptrj{i}", material_id=f"mptrj{i}", source="mptrj")
                for i, a in zip(range(n), iread(handle, format="extxyz"))]  # fmt: skip


@pytest.mark.parametrize(("name", "card_force_mae"), [("tensornet-matpes-pbe", 0.146), ("m3gnet-matpes-pbe", 0.181)])
def test_matpes_models_forces_on_real_dft_frames_are_within_their_card_test_error(name, card_force_mae):
    """Forces are convention-free: per-component MAE against the DFT forces of 30 MPtrj frames stays
    below the MatPES test MAE on each model card (unadapted: 1.4-1.7 eV/A on this set)."""
    _, predictor = _worker(name)
    frames = _mptrj_frames(30)
    out = predictor.predict(frames)
    errors = np.concatenate([np.abs(f - np.reshape(fr["forces"], (-1, 3))).ravel() for f, fr in zip(out["forces"], frames)])
    assert errors.mean() < card_force_mae


def test_matgl_batched_equals_pescalculator_one_by_one():
    """One PyG batch through `Potential` vs matgl's own ASE PESCalculator per structure (same adapted model)."""
    spec, predictor = _worker("m3gnet-mp-2021")
    frames = [_strained_nacl(0.01), from_atoms(_si(), frame_id="si", material_id="si", source="t"), _mptrj_frames(1)[0]]
    out = predictor.predict(frames, batch_size=3)
    calculator = (
        "import matgl\n"
        "from matgl.ext.ase import PESCalculator\n"
        "from xtalbench.models.matgl import adapt_destination_aggregation\n"
        f"potential = matgl.load_model({str(ROOT / spec.checkpoint)!r})\n"
        "adapt_destination_aggregation(potential)\n"
        "calc = PESCalculator(potential, stress_unit='eV/A3')"
    )
    _assert_same(out, _one_by_one(spec, calculator, frames), atol_stress=1e-6, atol=1e-4)


def test_message_aggregation_is_only_for_matgl():
    data = {"name": "x", "kind": "chgnet", "licence": "MIT", "training_set": {"name": "t", "database": "d"}, "message_aggregation": "destination"}
    with pytest.raises(ModelSpecError, match="message_aggregation"):
        parse_spec(data, "x.yaml")
    with pytest.raises(ModelSpecError, match="message_aggregation"):
        parse_spec({**data, "kind": "matgl", "checkpoint": "c", "message_aggregation": "source"}, "x.yaml")
