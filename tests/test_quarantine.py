"""Record-level quarantine on a corpus of broken inputs, and one warnings summary per stage.

The corpus is written here by hand: every expected outcome (kept ids, quarantined record and
field, counts) is listed literally, not derived from the code under test.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from xtalbench.cli import main
from xtalbench.core.io import WarningSummary, collect_warnings
from xtalbench.core.project import Paths

SI_CELL = 'Lattice="0 2.715 2.715 2.715 0 2.715 2.715 2.715 0"'
PROPS = 'Properties=species:S:1:pos:R:3:forces:R:3 pbc="T T T"'


def frame(energy: str, a: str = "Si 0 0 0 0.1 0 0", b: str = "Si 1.3575 1.3575 1.3575 -0.1 0 0", cell: str = SI_CELL) -> str:
    return f"2\n{cell} {PROPS} energy={energy}\n{a}\n{b}\n"


TRAJ = "".join([
    frame("-10.8"),                                                  # 0 good
    frame("-10.8", a="Xx 0 0 0 0.1 0 0"),                            # 1 unknown element
    frame("-10.8", b="Si 1.3575 1.3575 1.3575 -0.1 0"),              # 2 a force row one value short
    frame("nan"),                                                    # 3 NaN energy
    frame("-10.8", cell='Lattice="5 0 0 0 5 0 0 0 0"'),              # 4 zero-volume cell
    frame("-10.8", b="Si 0.1 0 0 -0.1 0 0"),                         # 5 atoms 0.1 Å apart
    frame("-10.7", a="Si 0.01 0 0 0.1 0 0"),                         # 6 good
    frame("-10.8", b="Si 1.3575 1.3575 1.3575 inf 0 0"),             # 7 infinite force
    f"2\n{SI_CELL} {PROPS} energy=-10.8\nSi 0 0 0 0.1 0 0\n",        # 8 cut short (file truncated)
])


def cif(formula: str, a: float) -> str:
    from pymatgen.core import Lattice, Structure

    species = {"NaCl": ["Na", "Cl"], "KCl": ["K", "Cl"]}[formula]
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), species, [[0, 0, 0], [0.5, 0.5, 0.5]]).to(fmt="cif")


def build_corpus(root: Path) -> Path:
    from pymatgen.core import Structure

    corpus = root / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "traj.extxyz").write_text(TRAJ)
    (corpus / "x.cif").write_text(cif("NaCl", 5.64))
    (corpus / "sub" / "x.cif").write_text(cif("KCl", 6.29))  # same stem, another structure
    (corpus / "garbage.cif").write_text("data_junk\n_cell_length_a banana\nnot a cif at all\n")
    (corpus / "empty.cif").write_text("")
    (corpus / "cut.cif.gz").write_bytes(gzip.compress(cif("NaCl", 5.64).encode())[:-30])
    kcl = Structure.from_str(cif("KCl", 6.29), fmt="cif").as_dict()
    (corpus / "nolattice.json").write_text(json.dumps({k: v for k, v in kcl.items() if k != "lattice"}))
    (corpus / "entries.json").write_text(json.dumps({"e-good": {"structure": kcl, "energy": -7.0},
                                                     "e-nan": {"structure": kcl, "energy": float("nan")}}))
    (corpus / "readme.txt").write_text("where these files came from\n")
    (corpus / ".hidden.cif").write_text("editor backup, skipped like every dotfile\n")
    return corpus


KEPT = {"traj-0", "traj-6", "x", "sub/x", "e-good"}
QUARANTINED_RECORDS = {
    ("traj-1", "numbers"): "unknown element 'Xx'",
    ("traj-2", "forces"): "6 values",
    ("traj-3", "energy"): "not finite",
    ("traj-4", "lattice"): "volume",
    ("traj-5", "positions"): "apart",
    ("traj-7", "forces"): "NaN or infinite",
    ("traj-8", "extxyz"): "cut short",
    ("garbage", "cif"): "unparsable CIF",
    ("nolattice", "lattice"): "without a 'lattice'",
    ("e-nan", "energy"): "not finite",
}
QUARANTINED_FILES = {"empty.cif": "empty file", "cut.cif.gz": "truncated or corrupted gzip", "readme.txt": "format"}


def run_cli(argv: list[str]) -> tuple[int, str]:
    """`xtalbench <argv>` in-process: (exit code, SystemExit message if the CLI raised one)."""
    try:
        return main(argv), ""
    except SystemExit as exit_:
        return (exit_.code if isinstance(exit_.code, int) else 2), ("" if isinstance(exit_.code, int) else str(exit_.code))


@dataclass
class Captured:
    out: str
    err: str


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    """One fetch of the corpus through the CLI (in-process), shared by the tests below."""
    root = tmp_path_factory.mktemp("quarantine")
    corpus = build_corpus(root)
    (root / "params.yaml").write_text(json.dumps({"datasets": {"bad": {"source": "local", "path": str(corpus)}}}))
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code, message = run_cli(["fetch", "bad", "--params", "params.yaml"])
    finally:
        os.chdir(cwd)
    return code, Captured(out.getvalue(), err.getvalue() + message), Paths("bad", root)


def test_corpus_keeps_every_good_record_and_quarantines_every_bad_one(corpus_run):
    code, captured, paths = corpus_run
    assert code == 0, captured.err
    assert "Traceback" not in captured.err + captured.out
    frames = pq.read_table(paths.frames).to_pylist()
    assert {f["frame_id"] for f in frames} == KEPT
    rows = pq.read_table(paths.quarantine).to_pylist()
    records = {(r["record"], r["field"]): r["reason"] for r in rows if r["field"] != "file"}
    assert set(records) == set(QUARANTINED_RECORDS)
    for key, expected in QUARANTINED_RECORDS.items():
        assert expected in records[key], (key, records[key])
    files = {Path(r["record"]).name: r["reason"] for r in rows if r["field"] == "file"}
    assert set(files) == set(QUARANTINED_FILES)
    for name, expected in QUARANTINED_FILES.items():
        assert expected in files[name], (name, files[name])
    assert all(r["record"].startswith(str(paths.root / "corpus")) for r in rows if r["field"] == "file")  # the file, named


def test_corpus_counts_add_up_for_records_and_files(corpus_run):
    _, _, paths = corpus_run
    metrics = json.loads(paths.metrics("fetch").read_text())
    # records: 9 frames of traj.extxyz + x, sub/x, garbage, nolattice, e-good, e-nan
    assert (metrics["read"], metrics["kept"], metrics["quarantined"]) == (15, 5, 10)
    # files: 9 read (the dotfile is skipped); empty.cif, cut.cif.gz and readme.txt unreadable
    assert metrics["files"] == {"read": 9, "kept": 6, "quarantined": 3}
    assert metrics["kept"] + metrics["quarantined"] == metrics["read"]
    assert pq.ParquetFile(paths.quarantine).metadata.num_rows == metrics["quarantined"] + metrics["files"]["quarantined"]
    assert sum(metrics["quarantined_by_field"].values()) == metrics["quarantined"]
    pin = json.loads(paths.data_version.read_text())
    assert pin["counts"] == {"read": 15, "kept": 5, "quarantined": 10}


def test_same_stem_in_two_folders_gives_two_materials(corpus_run):
    _, _, paths = corpus_run
    frames = {f["frame_id"]: f for f in pq.read_table(paths.frames).to_pylist()}
    assert frames["x"]["formula"] == "NaCl" and frames["sub/x"]["formula"] == "KCl"
    assert frames["x"]["material_id"] != frames["sub/x"]["material_id"]


def test_pymatgen_warnings_are_summarised_once(corpus_run):
    _, captured, _ = corpus_run
    err = captured.err
    assert err.count("warning(s), summarised") == 1
    # the garbage CIF makes pymatgen warn; the warning text appears only inside the summary lines
    lines = [line for line in err.splitlines() if "UserWarning" in line]
    assert lines and all(" x UserWarning [pymatgen]" in line for line in lines)


def test_all_files_unreadable_stops_with_the_causes_named(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "dead"
    folder.mkdir()
    (folder / "a.cif").write_text("")
    (folder / "b.extxyz.gz").write_bytes(gzip.compress(TRAJ.encode())[:20])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(json.dumps({"datasets": {"dead": {"source": "local", "path": str(folder)}}}))
    code, message = run_cli(["fetch", "dead", "--params", "params.yaml"])
    assert code != 0
    err = capsys.readouterr().err + message
    assert "Traceback" not in err
    assert "a.cif: empty file" in err and "b.extxyz.gz" in err and "gzip" in err
    assert not Paths("dead").frames.exists() and not Paths("dead").metrics("fetch").exists()


def test_warning_summary_groups_by_category_origin_and_prefix(capsys):
    with collect_warnings("demo") as summary:
        for n in range(5):
            warnings.warn(f"Issues encountered while parsing CIF: {n} fractional coordinates rounded", UserWarning, stacklevel=1)
        warnings.warn("something else", RuntimeWarning, stacklevel=1)
        warnings.warn("something else", RuntimeWarning, stacklevel=1)
        warnings.warn("old api", DeprecationWarning, stacklevel=1)  # ignored, as Python does by default
    assert summary.total == 7
    assert sorted(summary.counts.values()) == [2, 5]
    err = capsys.readouterr().err
    assert err.count("demo: 7 warning(s)") == 1
    assert "5 x UserWarning" in err and "2 x RuntimeWarning" in err and "old api" not in err


def test_warning_prefix_masks_numbers():
    summary = WarningSummary("x")
    summary.add("rounded 3 of 12 sites", UserWarning, "/v/lib/python3.11/site-packages/pymatgen/io/cif.py")
    summary.add("rounded 7 of 40 sites", UserWarning, "/v/lib/python3.11/site-packages/pymatgen/io/cif.py")
    assert summary.as_dict() == {"UserWarning [pymatgen]: rounded # of # sites": 2}


def test_truncated_gzip_of_a_single_shared_file_names_it(tmp_path, monkeypatch, capsys):
    blob = gzip.compress((frame("-10.8") * 400).encode())
    (tmp_path / "frames.extxyz.gz").write_bytes(blob[: len(blob) // 2])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(json.dumps({"datasets": {"t": {"source": "shared", "path": "frames.extxyz.gz"}}}))
    code, message = run_cli(["fetch", "t", "--params", "params.yaml"])
    err = capsys.readouterr().err + message
    assert code != 0 and "Traceback" not in err
    assert "frames.extxyz.gz: unreadable after" in err and "EOFError" in err
    assert not Paths("t").frames.exists()
