"""`local` source: a file or folder of extxyz, CIF, pymatgen JSON or Parquet.

Config keys (params.yaml `datasets.<name>`):
    path            file or folder; folders are read file by file in sorted order
    format          auto (by suffix) | extxyz | cif | json | parquet
    energy_key, forces_key, stress_key   extxyz keys holding labels (default: ASE's calculator results)
    stress_unit     eV/A3 (ASE convention, default) | GPa (ASE sign) | kbar_vasp (VASP: kBar, positive = compressive)
    material_id_key, frame_index_key, trajectory_id_key   extxyz info keys; default material_id = record id + index
    labels          a CSV of targets: an `id` column (the record id) + label columns (`fetch/sources/labels.py`)

Record ids derive from the file's path relative to the dataset folder without its format
suffixes (`x.cif` → `x`, `sub/x.cif.gz` → `sub/x`), never from the stem alone, so two files of
one name in different folders are two records. Each file is read record by record: a record
that cannot be read (unknown element, wrong-length row, truncated frame) is quarantined with its
field and the rest of the file is read; a file that cannot be read (empty, truncated gzip, not
JSON, unknown format) is reported as a `FileRead` with its reason (the fetch stage lists it in
the quarantine with field `file`). After each file the source yields its `FileRead`.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
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
from xtalbench.fetch.sources import FileRead
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
    """Every file to read, in sorted order (hidden files and folders skipped; unknown suffixes
    included, to be listed in the quarantine rather than vanish)."""
    path = Path(config["path"])
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not any(_known_suffix(p) for p in files) and config.get("format", "auto") == "auto":
            raise SourceError(f"{path}: folder holds no extxyz, CIF, JSON or Parquet files")
        return files
    return [path]


def record_id(path: Path, config: dict) -> str:
    """The id base of a file's records: its path relative to the dataset folder, without `.gz`
    and the format suffix (`sub/x.cif.gz` → `sub/x`); a single-file dataset uses the file name."""
    root = Path(config["path"])
    relative = path.relative_to(root) if root.is_dir() else Path(path.name)
    name = relative.name
    name = name.removesuffix(".gz")
    stem, dot, suffix = name.rpartition(".")
    if dot and f".{suffix}" in SUFFIX_FORMATS:
        name = stem
    return (relative.parent / name).as_posix() if relative.parent != Path(".") else name


def _known_suffix(path: Path) -> bool:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    return bool(suffixes) and suffixes[-1] in SUFFIX_FORMATS


# an error of these kinds while reading a file ends that file (listed with its reason), not the stage
FILE_ERRORS = (OSError, EOFError, ValueError, zlib.error, SourceError, UnicodeDecodeError, KeyError)


def read_records(config: dict, workdir: Path | None = None) -> Iterator[dict | Rejected | FileRead]:
    declared = config.get("format", "auto")
    labels = Path(config["labels"]).resolve() if config.get("labels") else None
    files = [p for p in input_files(config) if labels is None or p.resolve() != labels]  # the CSV is not a structure file

    def records() -> Iterator[dict | Rejected | FileRead]:
        for path in files:
            yield from read_file(path, config, declared)

    if labels is None:
        yield from records()
    else:
        from xtalbench.fetch.sources.labels import apply_labels

        yield from apply_labels(records(), config["labels"])


def read_file(path: Path, config: dict, declared: str = "auto", source: str = "local") -> Iterator[dict | Rejected | FileRead]:
    """One file's records, then its `FileRead` (with the reason when the file is unreadable)."""
    records = 0
    try:
        reader = READERS[file_format(path, declared)]
        if _is_empty(path):
            yield FileRead(str(path), "empty file")
            return
        for record in reader(path, config, source=source):
            records += 1
            yield record
    except FILE_ERRORS as error:
        where = f" after {records} record(s)" if records else ""
        yield FileRead(str(path), f"unreadable{where}: {_describe(error)}")
        return
    yield FileRead(str(path), None if records else "no records in file")


def _is_empty(path: Path) -> bool:
    if path.stat().st_size == 0:
        return True
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as handle:
            return not handle.read(1)
    return False


def _describe(error: BaseException) -> str:
    if isinstance(error, EOFError | zlib.error | gzip.BadGzipFile):
        return f"truncated or corrupted gzip ({type(error).__name__}: {error})"
    text = str(error)
    if isinstance(error, SourceError):
        return text
    return f"{type(error).__name__}: {text}"


def describe(config: dict) -> dict:
    out = {"path": str(config["path"]), "format": config.get("format", "auto")}
    if config.get("labels"):
        out["labels"] = str(config["labels"])
    return out


# --- readers ------------------------------------------------------------------------------


def read_extxyz(path: Path, config: dict, source: str = "local") -> Iterator[dict | Rejected]:
    """Stream frames of an extended-XYZ file (optionally gzipped), one frame at a time.

    Frames are cut by their atom-count lines and each is parsed on its own (ASE's extxyz parser),
    so a frame that does not parse (unknown element, a row of the wrong length, cut short) is
    quarantined with its field and the next frame is read. A count line that is not a number
    loses the frame boundaries: the rest of the file is unreadable (SourceError)."""
    stress_unit = config.get("stress_unit", "eV/A3")
    base = record_id(path, config) if "path" in config else _stem(path)
    with open_text(path) as handle:
        for index, line_no, text, problem in extxyz_frames(handle, path):
            if problem is None:
                parsed = _parse_extxyz_frame(text, index, line_no, path, base)
                if isinstance(parsed, Rejected):
                    yield parsed
                else:
                    yield _extxyz_frame(parsed, index, path, config, stress_unit, source, base)
            else:
                yield Rejected(f"{base}-{index}", "extxyz", f"{path} line {line_no}: {problem}", text)


def extxyz_frames(handle, path: Path) -> Iterator[tuple[int, int, str, str | None]]:
    """(frame index, line number of its count line, frame text, problem or None), in file order."""
    index, line_no = 0, 0
    while True:
        header = handle.readline()
        if not header:
            return
        line_no += 1
        if not header.strip():
            continue
        try:
            natoms = int(header.split()[0])
            if natoms < 0:
                raise ValueError
        except ValueError:
            raise SourceError(f"{path} line {line_no}: expected an atom count, got {header.strip()[:40]!r}; "
                              f"the rest of the file cannot be split into frames") from None
        lines = [header]
        for _ in range(natoms + 1):
            line = handle.readline()
            if not line:
                break
            lines.append(line)
        text = "".join(lines)
        if len(lines) < natoms + 2:
            yield index, line_no, text, f"frame cut short: {len(lines) - 2} of {natoms} atom lines (truncated file?)"
            return
        yield index, line_no, text, None
        index += 1
        line_no += natoms + 1


def _parse_extxyz_frame(text: str, index: int, line_no: int, path: Path, base: str):
    """ase.Atoms of one frame, or a Rejected naming the field that does not parse."""
    import ase.io

    try:
        return ase.io.read(io.StringIO(text), format="extxyz")
    except Exception as error:
        field, reason = _diagnose_extxyz(text, error)
        return Rejected(f"{base}-{index}", field, f"{path} frame {index} (line {line_no}): {reason}", text)


_FIELD_OF_PROPERTY = {"species": "numbers", "pos": "positions", "forces": "forces", "force": "forces", "magmoms": "magmoms", "Z": "numbers"}


def _diagnose_extxyz(text: str, error: Exception) -> tuple[str, str]:
    """(field, reason) for a frame ASE could not parse: which column or element is wrong."""
    from ase.data import atomic_numbers
    from ase.io.extxyz import key_val_str_to_dict

    lines = text.splitlines()
    try:
        info = key_val_str_to_dict(lines[1]) if len(lines) > 1 else {}
    except Exception:
        return "info", f"comment line does not parse ({type(error).__name__}: {error})"
    props = str(info.get("Properties", info.get("properties", "species:S:1:pos:R:3"))).split(":")
    columns: list[tuple[str, int]] = []
    for name, width in zip(props[0::3], props[2::3], strict=False):
        if str(width).isdigit():
            columns.extend([(name, int(width))])
    expected = sum(width for _, width in columns)
    for k, line in enumerate(lines[2:]):
        tokens = line.split()
        if len(tokens) != expected:
            seen, field = 0, columns[-1][0] if columns else "extxyz"
            for name, width in columns:
                seen += width
                if len(tokens) < seen:
                    field = name
                    break
            return _FIELD_OF_PROPERTY.get(field, field), f"atom {k}: {len(tokens)} values, Properties declares {expected} ({':'.join(props)})"
        if columns and columns[0][0] == "species" and tokens and tokens[0] not in atomic_numbers:
            return "numbers", f"atom {k}: unknown element {tokens[0]!r}"
    return "extxyz", f"{type(error).__name__}: {error}"


def _extxyz_frame(atoms, index: int, path: Path, config: dict, stress_unit: str, source: str, base: str | None = None) -> dict | Rejected:
    info = atoms.info
    own_id = f"{base or _stem(path)}-{index}"  # without a material id, every frame is its own material
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

    material_id = record_id(path, config)
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
    base = record_id(path, config)
    with open_text(path) as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise SourceError(f"{path}: not valid JSON ({error})") from error
    if isinstance(data, dict) and not {"@class", "lattice", "sites", "structure"} & set(data):
        items = list(data.items())
    elif isinstance(data, list):
        items = [(f"{base}-{i}", d) for i, d in enumerate(data)]
    else:
        items = [(base, data)]
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
    if not isinstance(struct_dict, dict):
        return Rejected(material_id, "structure", "not a pymatgen Structure dict", json.dumps(item, default=str))
    if "lattice" not in struct_dict:
        return Rejected(material_id, "lattice", "pymatgen Structure without a 'lattice'", json.dumps(item, default=str))
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
