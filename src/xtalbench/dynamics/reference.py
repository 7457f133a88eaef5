"""DFT phonon references (phonopy example folders) and the functional each was computed with.

A folder holds `phonopy_disp.yaml` (unit cell, supercell matrix, displacements), DFT forces in
`FORCE_SETS` or in `vasprun.xml` files (one per displacement, in order), `BORN` for polar
materials, and the vasprun files (plain, `.xz`, or a `vaspruns.tar.lzma` archive) that name the
functional: INCAR `GGA = PS` is PBEsol, `PE` PBE, absent or `--` the POTCAR default (PBE for
`PAW_PBE` potentials, LDA for plain `PAW`); `METAGGA` (SCAN, R2SCAN) and `LHFCALC = T` win over GGA.
"""

from __future__ import annotations

import lzma
import re
import tarfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xtalbench.core.errors import InputError

GGA_TAGS = {"PS": "PBEsol", "PE": "PBE", "91": "PW91", "RP": "RPBE", "RE": "revPBE", "AM": "AM05", "CA": "LDA"}
HEAD_BYTES = 400_000  # the <incar> and <parameters> blocks sit at the start of a vasprun


@dataclass
class Functional:
    name: str  # PBE, PBEsol, LDA, SCAN, ...
    files: list[str] = field(default_factory=list)  # vasprun files it was read from
    tags: dict[str, str] = field(default_factory=dict)  # the INCAR tags that decided it


def _vasprun_heads(folder: Path) -> Iterator[tuple[str, str]]:
    """(name, first HEAD_BYTES of text) of every vasprun in the folder, archives included, sorted."""
    for path in sorted(folder.iterdir()):
        name = path.name
        if not name.startswith("vasprun"):
            continue
        if name.endswith((".tar.lzma", ".tar.xz", ".tar.gz", ".tar")):
            with tarfile.open(path, "r:*") as archive:
                for member in sorted((m for m in archive.getmembers() if m.isfile()), key=lambda m: m.name):
                    handle = archive.extractfile(member)
                    if handle is not None and Path(member.name).name.startswith("vasprun"):
                        yield f"{name}:{member.name}", handle.read(HEAD_BYTES).decode("utf-8", "replace")
        elif name.endswith((".xz", ".lzma")):
            with lzma.open(path) as handle:
                yield name, handle.read(HEAD_BYTES).decode("utf-8", "replace")
        else:
            with open(path, "rb") as handle:
                yield name, handle.read(HEAD_BYTES).decode("utf-8", "replace")


def functional_from_text(text: str, source: str = "<vasprun>") -> tuple[str, dict[str, str]]:
    """The functional a vasprun's INCAR (or, failing it, its parameters block) asks for."""
    incar = re.search(r"<incar>(.*?)</incar>", text, re.DOTALL)
    block = incar.group(1) if incar else text

    def tag(name: str) -> str | None:
        match = re.search(rf'name="{name}"\s*>\s*([^<]*?)\s*<', block) or re.search(rf'name="{name}"\s*>\s*([^<]*?)\s*<', text)
        return match.group(1).strip() if match else None

    tags = {k: v for k in ("GGA", "METAGGA", "LHFCALC", "LDAU") if (v := tag(k)) is not None}
    potcars = re.findall(r"<c>\s*(PAW\S*)\s", text)
    if potcars:
        tags["POTCAR"] = potcars[0]
    if tags.get("LHFCALC", "F").upper().startswith("T"):
        return "hybrid", tags
    metagga = tags.get("METAGGA", "--").strip().upper()
    if metagga not in ("", "--", "NONE"):
        return metagga, tags
    gga = tags.get("GGA", "--").strip().upper()
    if gga not in ("", "--"):
        if gga not in GGA_TAGS:
            raise InputError(source, f"INCAR GGA = {gga!r} is not a known functional tag ({', '.join(GGA_TAGS)})")
        name = GGA_TAGS[gga]
    elif potcars:
        name = "PBE" if potcars[0].startswith("PAW_PBE") or potcars[0].startswith("PAW_GGA") else "LDA"
    else:
        raise InputError(source, "no GGA tag and no POTCAR title: cannot tell the functional")
    if tags.get("LDAU", "F").upper().startswith("T"):
        name += "+U"
    return name, tags


def read_functional(folder: str | Path) -> Functional:
    """The one functional of all vasprun files in a reference folder (an error if they disagree)."""
    folder = Path(folder)
    found: dict[str, list[str]] = {}
    tags: dict[str, str] = {}
    for name, text in _vasprun_heads(folder):
        functional, tags_here = functional_from_text(text, str(folder / name))
        found.setdefault(functional, []).append(name)
        tags = tags or tags_here
    if not found:
        raise InputError(folder, "no vasprun file: cannot tell the reference's functional")
    if len(found) > 1:
        raise InputError(folder, f"vasprun files disagree on the functional: {found}")
    (name, files), = found.items()
    return Functional(name=name, files=files, tags=tags)


def load_reference(folder: str | Path, nac: bool = True):
    """A phonopy object with the DFT force constants (full supercell matrix) of one reference folder."""
    import phonopy

    folder = Path(folder)
    disp = folder / "phonopy_disp.yaml"
    if not disp.exists():
        raise InputError(disp, "missing: a reference needs phonopy_disp.yaml")
    force_sets = folder / "FORCE_SETS"
    born = folder / "BORN"
    try:
        with warnings.catch_warnings():
            # A yaml without primitive_matrix gets phonopy 4's "auto" (the yaml's own wins, e.g. Cr's magnetic cell).
            warnings.filterwarnings("ignore", message="primitive_matrix defaulted")
            phonon = phonopy.load(
                disp,
                force_sets_filename=force_sets if force_sets.exists() else None,
                born_filename=born if (nac and born.exists()) else None,
                is_nac=nac and born.exists(),
                produce_fc=False,
                log_level=0,
            )
    except Exception as error:  # phonopy raises bare RuntimeError/ValueError on bad files
        raise InputError(disp, f"phonopy cannot load it: {error}") from error
    if not force_sets.exists():
        phonon.forces = vasprun_forces(folder, phonon)
    phonon.produce_force_constants(calculate_full_force_constants=True, show_drift=False)
    phonon.symmetrize_force_constants(show_drift=False)
    return phonon


def vasprun_forces(folder: Path, phonon) -> np.ndarray:
    """DFT forces from `vasprun.xml` files (one per displacement, sorted by name), checked against the supercells."""
    from ase.io import read

    files = sorted(p for p in folder.iterdir() if p.name.startswith("vasprun") and p.suffix == ".xml")
    cells = phonon.supercells_with_displacements
    if len(files) != len(cells):
        raise InputError(folder, f"no FORCE_SETS and {len(files)} vasprun.xml files for {len(cells)} displacements")
    forces = []
    for path, cell in zip(files, cells):
        atoms = read(path, format="vasp-xml", index=-1)
        if len(atoms) != len(cell) or not np.allclose(atoms.get_scaled_positions() % 1.0, cell.scaled_positions % 1.0, atol=1e-4):
            raise InputError(path, "its structure is not the matching displaced supercell of phonopy_disp.yaml")
        forces.append(np.asarray(atoms.get_forces(), dtype=np.float64))
    return np.asarray(forces)
