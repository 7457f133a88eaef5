"""`local` source: a file or folder of extxyz, CIF, pymatgen JSON or Parquet.

Config keys (params.yaml `datasets.<name>`):
    path            file or folder; folders are read file by file in sorted order
    format          auto (by suffix) | extxyz | cif | json | parquet
    energy_key, forces_key, stress_key   extxyz keys holding labels (default: ASE's calculator results)
    stress_unit     eV/A3 (ASE convention, default) | GPa (ASE sign) | kbar_vasp (VASP: kBar, positive = compressive)
    material_id_key, frame_index_key, trajectory_id_key   extxyz info keys; default material_id = file stem + index
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xtalbench.core.errors import XtalbenchError
from xtalbench.core.schema import (
    FrameError,
    Rejected,
    from_atoms,
    from_structure,
    make_frame,
)
from xtalbench.fetch.sources.units import stress_to_ase

SUFFIX_FORMATS = {".extxyz": "extxyz", ".xyz": "extxyz", ".cif": "cif", ".json": "json", ".parquet": "parquet"}


class SourceError(XtalbenchError, RuntimeError):
    """An input that cannot be read at all: names the file and the cause."""


def file_format(path: Path, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    suffixes = [s for s in path.suffixes if s != ".gz"]
    if suffixes and suffixes[-1] in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffixes[-1]]
    raise SourceError(f"{path}: cannot tell the format from the suffix; set `format` in params")


def open_text(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def input_files(config: dict) -> list[Path]:
    path = Path(config["path"])
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _known_suffix(p))
        if not files:
            raise SourceError(f"{path}: folder holds no extxyz, CIF, JSON or Parquet files")
        return files
    return [path]


def _known_suffix(path: Path) -> bool:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    return bool(suffixes) and suffixes[-1] in SUFFIX_FORMATS


def read_records(config: dict, workdir: Path | None = None) -> Iterator[dict | Rejected]:
    declared = config.get("format", "auto")
    for path in input_files(config):
        reader = READERS[file_format(path, declared)]
        yield from reader(path, config)


def describe(config: dict) -> dict:
    return {"path": str(config["path"]), "format": config.get("format", "auto")}


# --- readers ------------------------------------------------------------------------------


def read_extxyz(path: Path, config: dict, source: str = "local") -> Iterator[dict | Rejected]:
    """Stream frames of an extended-XYZ file (optionally gzipped) with ase.io.iread."""
    import ase.io

    stress_unit = config.get("stress_unit", "eV/A3")
    with open_text(path) as handle:
        try:
            for index, atoms in enumerate(ase.io.iread(handle, index=":", format="extxyz")):
                yield _extxyz_frame(atoms, index, path, config, stress_unit, source)
        except Exception as error:  # a frame that cannot be parsed ends the readable part of the file
            raise SourceError(f"{path}: extxyz unreadable after frame {locals().get('index', -1)}: {error}") from error


def _extxyz_frame(atoms, index: int, path: Path, config: dict, stress_unit: str, source: str) -> dict | Rejected:
    info = atoms.info
    own_id = f"{_stem(path)}-{index}"  # without a material id, every frame is its own material
    material_id = str(info.get(config.get("material_id_key", "material_id"), own_id))
    frame_index = info.get(config.get("frame_index_key", "frame_index"))
    default_frame_id = own_id if material_id == own_id else _frame_id(material_id, info, index, config)
    frame_id = str(info.get(config.get("frame_id_key", "frame_id"), "") or default_frame_id)
    raw = {"file": str(path), "index": index, "info": info}
    try:
        energy = _label(atoms, config.get("energy_key"), "energy")
        forces = _label(atoms, config.get("forces_key"), "forces")
        stress = _label(atoms, config.get("stress_key"), "stress")
        if stress is not None:
            stress = stress_to_ase(stress, stress_unit, frame_id)
        return from_atoms(
            atoms,
            frame_id=frame_id,
            material_id=material_id,
            source=source,
            energy=energy,
            forces=forces,
            stress=stress,
            trajectory_id=info.get(config.get("trajectory_id_key", "trajectory_id"), material_id),
            frame_index=None if frame_index is None else int(frame_index),
            meta={k: info[k] for k in config.get("meta_keys", []) if k in info},
        )
    except (FrameError, ValueError) as error:
        field = error.field if isinstance(error, FrameError) else "extxyz"
        return Rejected(frame_id, field, str(error), json.dumps(raw, default=str))


def _frame_id(material_id: str, info: dict, index: int, config: dict) -> str:
    parts = [info.get(key) for key in config.get("frame_id_parts", [])]
    if parts and all(p is not None for p in parts):
        return "-".join([material_id, *map(str, parts)])
    return f"{material_id}-{index}"


def _label(atoms, key: str | None, kind: str) -> Any:
    """A label from info/arrays under `key`, else from the calculator ASE attached."""
    if key:
        if key in atoms.info:
            return atoms.info[key]
        if key in atoms.arrays:
            return atoms.arrays[key]
        return None
    if atoms.calc is not None and kind in atoms.calc.results:
        return atoms.calc.results[kind]
    return None


def _stem(path: Path) -> str:
    return path.name.split(".")[0]


def read_cif(path: Path, config: dict, source: str = "local") -> Iterator[dict | Rejected]:
    from pymatgen.core import Structure

    material_id = _stem(path)
    with open_text(path) as handle:
        text = handle.read()
    try:
        structure = Structure.from_str(text, fmt="cif")
        yield from_structure(structure, frame_id=material_id, material_id=material_id, source=source)
    except FrameError as error:
        yield Rejected.from_error(error, {"file": str(path)})
    except Exception as error:
        yield Rejected(material_id, "cif", f"unparsable CIF in {path}: {error}", text)


def read_json(path: Path, config: dict, source: str = "local") -> Iterator[dict | Rejected]:
    """pymatgen JSON: one Structure / ComputedStructureEntry dict, or a list or id→dict mapping of them."""
    with open_text(path) as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise SourceError(f"{path}: not valid JSON ({error})") from error
    if isinstance(data, dict) and "@class" not in data and "lattice" not in data:
        items = list(data.items())
    elif isinstance(data, list):
        items = [(f"{_stem(path)}-{i}", d) for i, d in enumerate(data)]
    else:
        items = [(_stem(path), data)]
    for key, item in items:
        yield _pymatgen_frame(str(key), item, source)


def _pymatgen_frame(key: str, item: Any, source: str) -> dict | Rejected:
    from pymatgen.core import Structure

    if not isinstance(item, dict):
        return Rejected(key, "structure", "not a pymatgen dict", json.dumps(item, default=str))
    labels: dict[str, Any] = {}
    struct_dict = item
    if "structure" in item:  # ComputedStructureEntry or a {structure, energy, ...} record
        struct_dict = item["structure"]
        if item.get("energy") is not None:
            labels["energy"] = item["energy"]
    material_id = str(item.get("entry_id") or item.get("material_id") or key)
    try:
        structure = Structure.from_dict(struct_dict)
        return from_structure(structure, frame_id=material_id, material_id=material_id, source=source, **labels)
    except FrameError as error:
        return Rejected.from_error(error, item)
    except Exception as error:
        return Rejected(material_id, "structure", f"not a pymatgen Structure: {error}", json.dumps(item, default=str))


def read_parquet(path: Path, config: dict, source: str = "local") -> Iterator[dict | Rejected]:
    """A frames-table Parquet file (any subset of FRAMES_SCHEMA columns with the structure ones)."""
    import pyarrow.parquet as pq

    from xtalbench.core.schema import COLUMNS

    try:
        handle = pq.ParquetFile(path)
    except Exception as error:
        raise SourceError(f"{path}: not a readable Parquet file ({error})") from error
    required = {"frame_id", "material_id", "lattice", "numbers", "positions"}
    missing = required - set(handle.schema_arrow.names)
    if missing:
        raise SourceError(f"{path}: missing columns {sorted(missing)} of the frames table")
    derived = {"formula", "elements", "nsites", "structure_hash", "source"}
    for batch in handle.iter_batches():
        for row in batch.to_pylist():
            fields = {k: v for k, v in row.items() if k in COLUMNS and k not in derived}
            if isinstance(fields.get("meta"), str):
                fields["meta"] = json.loads(fields["meta"])
            try:
                yield make_frame(source=source, **fields)
            except (FrameError, ValueError, TypeError) as error:
                yield Rejected(str(row.get("frame_id")), getattr(error, "field", "row"), str(error), json.dumps(row, default=str))


READERS = {"extxyz": read_extxyz, "cif": read_cif, "json": read_json, "parquet": read_parquet}
