"""The fetch stage on the real shared MP data and on local files, including bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import GPa

from xtalbench.core.errors import XtalbenchError
from xtalbench.core.project import Paths
from xtalbench.core.schema import validate_frame
from xtalbench.fetch.sources.local import SourceError
from xtalbench.fetch.stage import fetch, redact

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MP20 = SHARED / "mp20-subset" / "mp20_subset.parquet"
TASK_FRAMES = SHARED / "mp-task-frames" / "mp_task_frames.extxyz.gz"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_fetch(name: str, config: dict) -> tuple[dict, list[dict], list[dict]]:
    paths = Paths(name)
    summary = fetch(name, config, paths)
    return summary, pq.read_table(paths.frames).to_pylist(), pq.read_table(paths.quarantine).to_pylist()


def test_mp20_frames_carry_mp_labels(workdir):
    summary, frames, quarantined = run_fetch("mp20", {"source": "shared", "path": str(MP20), "limit": 60})
    assert summary["read"] == 60 and summary["kept"] + summary["quarantined"] == 60
    assert len(frames) == summary["kept"] and len(quarantined) == summary["quarantined"]
    source = {r["material_id"]: r for r in pq.read_table(MP20).slice(0, 60).to_pylist()}
    for frame in frames:
        validate_frame(frame)
        row = source[frame["material_id"]]
        assert frame["formation_energy_per_atom"] == pytest.approx(row["formation_energy_per_atom"])
        assert frame["e_above_hull"] == pytest.approx(row["e_above_hull"])
        assert frame["spacegroup"] == row["spacegroup.number"]
        assert frame["formula"] == row["pretty_formula"] or frame["elements"] == sorted(row["elements"])
    pin = json.loads(Paths("mp20").data_version.read_text())
    assert pin["counts"] == {"read": 60, "kept": summary["kept"], "quarantined": summary["quarantined"]}
    assert pin["inputs_sha256"][str(MP20)] and set(pin["outputs_sha256"]) == {"frames.parquet", "quarantine.parquet"}
    assert json.loads(Paths("mp20").metrics("fetch").read_text())["kept"] == summary["kept"]


def test_task_frames_convert_vasp_stress_and_quarantine_duplicates(workdir):
    summary, frames, quarantined = run_fetch("frames", {"source": "shared", "path": str(TASK_FRAMES)})
    assert summary["read"] == 817 and summary["kept"] + summary["quarantined"] == 817
    reasons = {q["field"] for q in quarantined}
    assert {"frame_id", "run_type", "task_type"} <= reasons
    assert all(q["raw"] for q in quarantined)  # nothing lost: the record is kept with its reason
    # first frame of the file: SiC, dft_stress_kbar diagonal (-0.1029, -0.1029, -0.0811) kBar
    first = next(f for f in frames if f["frame_id"] == "mp-ffhdk-0-0")
    expected = -0.1 * GPa * np.array([-0.10291319, -0.10291319, -0.08107358])
    assert np.allclose(first["stress"][:3], expected) and all(s > 0 for s in first["stress"][:3])  # tensile
    assert first["energy"] == pytest.approx(-75.3134754)
    assert first["material_id"] == "mp-ffhdk" and first["frame_index"] == 0
    assert len(first["forces"]) == 3 * first["nsites"]
    assert all(json.loads(f["meta"])["run_type"] in ("GGA", "GGA+U") for f in frames)


def test_fetch_is_deterministic(workdir):
    config = {"source": "shared", "path": str(MP20), "limit": 40}
    run_fetch("a", config)
    run_fetch("b", config)
    assert Paths("a").frames.read_bytes() == Paths("b").frames.read_bytes()


def test_local_extxyz_cif_json_and_parquet(workdir):
    import ase.io
    from pymatgen.core import Structure

    folder = workdir / "inputs"
    folder.mkdir()
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    atoms.calc = SinglePointCalculator(atoms, energy=-7.5, forces=np.full((2, 3), 0.1), stress=np.full(6, 0.01))
    atoms.info["material_id"] = "cu-1"
    ase.io.write(folder / "cu.extxyz", atoms, format="extxyz")
    nacl = Structure.from_spacegroup("Fm-3m", [[5.64, 0, 0], [0, 5.64, 0], [0, 0, 5.64]], ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    (folder / "nacl.cif").write_text(nacl.to(fmt="cif"))
    (folder / "broken.cif").write_text("data_broken\n_cell_length_a 3.0\nthis is not a CIF loop\n")
    (folder / "entries.json").write_text(json.dumps({"mp-22862": {"structure": nacl.as_dict(), "energy": -27.0}, "bad": {"structure": {"lattice": 1}}}))
    summary, frames, quarantined = run_fetch("local", {"source": "local", "path": str(folder)})
    by_id = {f["frame_id"]: f for f in frames}
    assert summary["read"] == 5 and summary["kept"] == 3 and summary["quarantined"] == 2
    assert by_id["cu-1-0"]["energy"] == pytest.approx(-7.5) and by_id["cu-1-0"]["stress"] == pytest.approx([0.01] * 6)
    assert by_id["nacl"]["formula"] == "NaCl" and by_id["mp-22862"]["energy"] == pytest.approx(-27.0)
    assert by_id["nacl"]["structure_hash"] == by_id["mp-22862"]["structure_hash"]  # one identity across formats
    assert {(q["record"], q["field"]) for q in quarantined} == {("broken", "cif"), ("bad", "structure")}
    # a frames-table Parquet file goes back through the local source unchanged
    summary2, frames2, _ = run_fetch("again", {"source": "local", "path": str(Paths("local").frames)})
    assert summary2["kept"] == 3 and [f["structure_hash"] for f in frames2] == [f["structure_hash"] for f in frames]


def test_unreadable_inputs_stop_with_the_file_named(workdir):
    with pytest.raises(SourceError, match="no such file"):
        fetch("x", {"source": "shared", "path": "missing/mp20.parquet"}, Paths("x"))
    corrupt = workdir / "corrupt.extxyz.gz"
    corrupt.write_bytes(gzip.compress(b"3\nLattice=\"1 0 0 0 1 0 0 0 1\" Properties=species:S:1:pos:R:3\nSi 0 0\n")[:-6])
    with pytest.raises(SourceError, match="corrupt.extxyz.gz"):
        fetch("y", {"source": "local", "path": str(corrupt)}, Paths("y"))
    with pytest.raises(XtalbenchError, match="unknown source"):
        fetch("z", {"source": "ftp"}, Paths("z"))


def test_bad_records_are_quarantined_with_record_and_field(workdir):
    import ase.io

    good = bulk("Si", "diamond", a=5.43)
    good.calc = SinglePointCalculator(good, energy=-10.8, forces=np.zeros((2, 3)))
    nan = good.copy()
    nan.calc = SinglePointCalculator(nan, energy=-10.8, forces=np.array([[np.nan, 0, 0], [0, 0, 0]]))
    close = good.copy()
    close.positions[1] = close.positions[0] + 0.2
    close.calc = SinglePointCalculator(close, energy=-5.0)
    path = workdir / "mixed.extxyz"
    ase.io.write(path, [good, nan, close], format="extxyz")
    summary, frames, quarantined = run_fetch("mixed", {"source": "local", "path": str(path)})
    assert summary["kept"] == 1 and summary["quarantined"] == 2
    assert {(q["record"], q["field"]) for q in quarantined} == {("mixed-1", "forces"), ("mixed-2", "positions")}
    assert "NaN" in next(q["reason"] for q in quarantined if q["field"] == "forces")


def test_secrets_are_redacted_from_artifacts(monkeypatch):
    monkeypatch.setenv("MP_API_KEY", "s3cr3tKEYs3cr3tKEY0123")
    cleaned = redact({"url": "https://x?key=s3cr3tKEYs3cr3tKEY0123", "list": ["s3cr3tKEYs3cr3tKEY0123"]})
    assert "s3cr3tKEY" not in json.dumps(cleaned)
