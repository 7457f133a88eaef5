"""`shared` source: the real Materials Project data in ../shared/data (offline default).

Two files are understood, told apart by suffix:
- `mp20_subset.parquet`: relaxed MP structures as CIF text with MP's formation energy
  (MP2020-corrected), E_above_hull, band gap and space group → one frame per material.
- `mp_task_frames.extxyz.gz`: VASP ionic steps of MP task documents → one frame per step;
  energy = `e_fr_energy` (eV), forces = `dft_forces` (eV/Å), stress = `dft_stress_kbar`
  converted from VASP kBar (positive = compressive) to ASE eV/Å³ (positive = tensile);
  `material_id` = `task_id` (the frames of one calculation stay together).

- `mattersim-benchmarks/<set>.extxyz.gz` (`mptrj-random-1k`, `alexandria-random-1k`, `mpf-TP`,
  `mpf-alkali-TP`, `random-TP`): energy (eV, total), forces (eV/Å), stress (eV/Å³, ASE sign:
  the compressed high-pressure frames carry negative stresses) → one frame per structure;
  `material_id` = `mptrj_traj_id` (an MP id) / `alexandria_id` / `internal_id`, `frame_id` =
  `mptrj_snapshot_id` or that id. Told apart from the task frames by the file name.

Config keys: `path`; for the task frames `run_types` (kept functionals; others are
quarantined, since energies of different functionals are not comparable) and
`exclude_task_types` (non-self-consistent runs whose energies are not meaningful); for the
MatterSim sets `sample` (a seeded random sample of N frames, in file order; null: all),
`seed`, and `level_of_theory` (what the labels are: recorded in DATA_VERSION, read by zeroshot).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

from xtalbench.core.schema import FrameError, Rejected, from_structure, raw_json
from xtalbench.fetch.sources import local

TASK_FRAME_KEYS = {
    "energy_key": "e_fr_energy",
    "forces_key": "dft_forces",
    "stress_key": "dft_stress_kbar",
    "stress_unit": "kbar_vasp",
    "material_id_key": "task_id",
    "trajectory_id_key": "task_id",
    "frame_index_key": "ionic_step",
    "frame_id_parts": ["calc_index", "ionic_step"],
    "meta_keys": ["run_type", "task_type", "calc_index", "source_file"],
}
DEFAULT_RUN_TYPES = ["GGA", "GGA+U"]
DEFAULT_EXCLUDED_TASK_TYPES = ["NSCF Line", "NSCF Uniform"]
# MatterSim benchmark sets (file stem → extxyz keys); every other extxyz is read as MP task frames.
MATTERSIM_SETS = {
    "mptrj-random-1k": {"material_id_key": "mptrj_traj_id", "frame_id_key": "mptrj_snapshot_id", "trajectory_id_key": "mptrj_traj_id"},
    "alexandria-random-1k": {"material_id_key": "alexandria_id", "frame_id_key": "alexandria_id"},
    "mpf-TP": {"material_id_key": "internal_id", "frame_id_key": "internal_id"},
    "mpf-alkali-TP": {"material_id_key": "internal_id", "frame_id_key": "internal_id"},
    "random-TP": {"material_id_key": "internal_id", "frame_id_key": "internal_id"},
}
MATTERSIM_META = ["source", "mptrj_traj_id", "mptrj_snapshot_id", "alexandria_id", "internal_id"]


def read_records(config: dict, workdir: Path | None = None) -> Iterator[dict | Rejected]:
    path = Path(config["path"])
    if not path.exists():
        raise local.SourceError(f"{path}: no such file (is ../shared beside the project?)")
    if path.suffix == ".parquet":
        yield from read_mp20(path)
    elif mattersim_set(path):
        yield from read_mattersim(path, config)
    elif ".extxyz" in path.suffixes:
        yield from read_task_frames(path, config)
    else:
        raise local.SourceError(f"{path}: the shared source reads mp20_subset.parquet or mp_task_frames.extxyz.gz")


def describe(config: dict) -> dict:
    info = {"path": str(config["path"])}
    if mattersim_set(Path(config["path"])):
        return {**info, "set": mattersim_set(Path(config["path"])), "sample": config.get("sample"), "seed": int(config.get("seed", 0)),
                "level_of_theory": config.get("level_of_theory")}  # fmt: skip
    if ".extxyz" in Path(config["path"]).suffixes:
        info["run_types"] = config.get("run_types", DEFAULT_RUN_TYPES)
        info["exclude_task_types"] = config.get("exclude_task_types", DEFAULT_EXCLUDED_TASK_TYPES)
    return info


def mattersim_set(path: Path) -> str | None:
    """The MatterSim benchmark set a file holds (by its name), or None."""
    stem = path.name.split(".")[0]
    return stem if stem in MATTERSIM_SETS else None


def extxyz_blocks(path: Path) -> Iterator[str]:
    """The text of each extxyz frame (atom-count line, comment, atom lines), without parsing."""
    n = 0
    with local.open_text(path) as handle:
        for line in handle:
            text = line.strip()
            if not text:
                continue
            try:
                natoms = int(text)
            except ValueError as error:
                raise local.SourceError(f"{path}: frame {n}: expected an atom count, got {text[:40]!r}") from error
            lines = [line]
            for _ in range(natoms + 1):
                more = handle.readline()
                if not more:
                    raise local.SourceError(f"{path}: frame {n} is cut short")
                lines.append(more)
            yield "".join(lines)
            n += 1


def count_extxyz_frames(path: Path) -> int:
    """Frames in an extxyz file, counted from the atom-count lines alone (no parsing)."""
    return sum(1 for _ in extxyz_blocks(path))


def sample_indices(n_frames: int, sample: int | None, seed: int) -> set[int] | None:
    """A seeded random choice of `sample` of `n_frames` indices (None: keep all)."""
    if sample is None or int(sample) >= n_frames:
        return None
    if int(sample) < 1:
        raise local.SourceError(f"sample = {sample}: must be a positive number of frames (or null for all)")
    import numpy as np

    return {int(i) for i in np.random.default_rng(int(seed)).choice(n_frames, size=int(sample), replace=False)}


def read_mattersim(path: Path, config: dict) -> Iterator[dict | Rejected]:
    """One MatterSim benchmark set: every frame, or a seeded sample (`sample`, `seed`) in file order.

    Only the kept frames are parsed (ase.io, one frame's text at a time)."""
    import io

    import ase.io

    name = mattersim_set(path)
    keys = {**MATTERSIM_SETS[name], "meta_keys": MATTERSIM_META}  # type: ignore[index]
    sample = config.get("sample")  # null: every frame, and no counting pass over the file
    keep = None if sample is None else sample_indices(count_extxyz_frames(path), sample, int(config.get("seed", 0)))
    for index, block in enumerate(extxyz_blocks(path)):
        if keep is not None and index not in keep:
            continue
        try:
            atoms = ase.io.read(io.StringIO(block), format="extxyz")
        except Exception as error:
            raise local.SourceError(f"{path}: frame {index} is not readable extxyz: {error}") from error
        yield local._extxyz_frame(atoms, index, path, keys, "eV/A3", f"mattersim:{name}")


def read_mp20(path: Path) -> Iterator[dict | Rejected]:
    import pyarrow.parquet as pq
    from pymatgen.core import Composition, Structure

    try:
        handle = pq.ParquetFile(path)
    except Exception as error:
        raise local.SourceError(f"{path}: not a readable Parquet file ({error})") from error
    for batch in handle.iter_batches(batch_size=1000):
        for row in batch.to_pylist():
            material_id = str(row.get("material_id") or "?")
            cif = row.get("cif")
            if not cif:
                yield Rejected(material_id, "cif", "missing", json.dumps(row, default=str))
                continue
            try:
                with warnings.catch_warnings():  # pymatgen notes each rounding of 1/3-like coordinates
                    warnings.simplefilter("ignore", UserWarning)
                    structure = Structure.from_str(cif, fmt="cif")
            except Exception as error:
                yield Rejected(material_id, "cif", f"unparsable CIF: {error}", json.dumps(row, default=str))
                continue
            if row.get("pretty_formula") and structure.composition.reduced_formula != Composition(row["pretty_formula"]).reduced_formula:
                reason = f"CIF formula {structure.composition.reduced_formula} != pretty_formula {row['pretty_formula']}"
                yield Rejected(material_id, "cif", reason, json.dumps(row, default=str))
                continue
            try:
                yield from_structure(
                    structure,
                    frame_id=material_id,
                    material_id=material_id,
                    source="mp20",
                    formation_energy_per_atom=row.get("formation_energy_per_atom"),
                    e_above_hull=row.get("e_above_hull"),
                    band_gap=row.get("band_gap"),
                    spacegroup=row.get("spacegroup.number"),
                    meta={"mp20_split": row.get("mp20_split")},
                )
            except FrameError as error:
                yield Rejected.from_error(error, row)


def read_task_frames(path: Path, config: dict) -> Iterator[dict | Rejected]:
    run_types = set(config.get("run_types", DEFAULT_RUN_TYPES))
    excluded = set(config.get("exclude_task_types", DEFAULT_EXCLUDED_TASK_TYPES))
    for record in local.read_extxyz(path, {**TASK_FRAME_KEYS, **config}, source="mp-task-frames"):
        if isinstance(record, Rejected):
            yield record
            continue
        meta = json.loads(record["meta"] or "{}")
        run_type = _run_type(meta.get("run_type"))
        meta["run_type"] = run_type
        record["meta"] = json.dumps(meta, sort_keys=True)
        raw = raw_json(record)
        if run_types and run_type not in run_types:
            yield Rejected(record["frame_id"], "run_type", f"{run_type} not in params run_types {sorted(run_types)}", raw)
        elif meta.get("task_type") in excluded:
            yield Rejected(record["frame_id"], "task_type", f"{meta['task_type']} is excluded (non-self-consistent energies)", raw)
        else:
            yield record


def _run_type(value: object) -> str:
    """Normalise emmet's serialised RunType enum (a dict repr in some task docs) to its value."""
    text = str(value)
    if text.startswith("{") and "'value'" in text:
        import ast

        return str(ast.literal_eval(text)["value"])
    return text
