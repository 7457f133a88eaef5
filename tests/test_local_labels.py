"""`local` source: a CSV of targets beside CIFs (`labels:`), read by record id."""

from __future__ import annotations

import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from xtalbench.core.schema import Rejected
from xtalbench.fetch.sources import FileRead, local
from xtalbench.fetch.sources.labels import LabelsError

MP20 = Path(__file__).resolve().parents[2] / "shared" / "data" / "mp20-subset" / "mp20_subset.parquet"


@pytest.fixture()
def cif_folder(tmp_path: Path) -> Path:
    if not MP20.exists():
        pytest.skip(f"{MP20} not present")
    cifs = pq.read_table(MP20, columns=["cif"]).slice(0, 3)["cif"].to_pylist()
    root = tmp_path / "cifs"
    (root / "sub").mkdir(parents=True)
    for name, text in zip(["a.cif", "sub/b.cif", "c.cif"], cifs):
        (root / name).write_text(text)
    return root


def read(config: dict) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(local.read_records(config))


def test_labels_csv_beside_cifs_sets_targets_by_record_id(cif_folder: Path) -> None:
    (cif_folder / "labels.csv").write_text(
        "id,energy,band_gap,formation_energy_per_atom,spacegroup\n"
        "a,-10.5,1.25,,225\n"
        "sub/b,,,abc,\n"
        "ghost,-1,,,\n"
    )
    out = read({"path": str(cif_folder), "labels": str(cif_folder / "labels.csv")})
    frames = {r["frame_id"]: r for r in out if isinstance(r, dict)}
    rejected = {(r.record, r.field): r.reason for r in out if isinstance(r, Rejected)}
    files = [r for r in out if isinstance(r, FileRead)]
    assert sorted(frames) == ["a", "c"]
    a = frames["a"]
    assert (a["energy"], a["band_gap"], a["spacegroup"], a["formation_energy_per_atom"]) == (-10.5, 1.25, 225, None)
    assert frames["c"]["energy"] is None  # not in the CSV: unlabelled, still kept
    assert set(rejected) == {("sub/b", "formation_energy_per_atom"), ("ghost", "labels")}
    assert "line 3" in rejected[("sub/b", "formation_energy_per_atom")] and "'abc'" in rejected[("sub/b", "formation_energy_per_atom")]
    assert "line 4" in rejected[("ghost", "labels")]
    assert sorted(Path(f.file).name for f in files) == ["a.cif", "b.cif", "c.cif"]  # the CSV is not read as a structure
    assert all(f.error is None for f in files)


@pytest.mark.parametrize("text, message", [
    ("name,energy\nx,1\n", "no `id` column"),
    ("id,enrgy\nx,1\n", "unknown column(s) ['enrgy']"),
    ("id,energy\nx,1\nx,2\n", "line 3: id 'x' repeats line 2"),
])
def test_a_broken_labels_csv_stops_naming_file_line_and_column(cif_folder: Path, text: str, message: str) -> None:
    csv_path = cif_folder.parent / "targets.csv"
    csv_path.write_text(text)
    with pytest.raises(LabelsError, match=None) as error:
        read({"path": str(cif_folder), "labels": str(csv_path)})
    assert message in str(error.value) and str(csv_path) in str(error.value)


def test_labels_is_a_known_param_of_the_local_source() -> None:
    from xtalbench.fetch.params import LocalParams

    assert LocalParams(source="local", path="x", labels="x/labels.csv").labels == "x/labels.csv"
