"""`shared` source: the real Materials Project data in ../shared/data (offline default).

Two files are understood, told apart by suffix:
- `mp20_subset.parquet`: relaxed MP structures as CIF text with MP's formation energy
  (MP2020-corrected), E_above_hull, band gap and space group → one frame per material.
- `mp_task_frames.extxyz.gz`: VASP ionic steps of MP task documents → one frame per step;
  energy = `e_fr_energy` (eV), forces = `dft_forces` (eV/Å), stress = `dft_stress_kbar`
  converted from VASP kBar (positive = compressive) to ASE eV/Å³ (positive = tensile);
  `material_id` = `task_id` (the frames of one calculation stay together).

Config keys: `path`; for the task frames `run_types` (kept functionals; others are
quarantined, since energies of different functionals are not comparable) and
`exclude_task_types` (non-self-consistent runs whose energies are not meaningful).
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


def read_records(config: dict, workdir: Path | None = None) -> Iterator[dict | Rejected]:
    path = Path(config["path"])
    if not path.exists():
        raise local.SourceError(f"{path}: no such file (is ../shared beside the project?)")
    if path.suffix == ".parquet":
        yield from read_mp20(path)
    elif ".extxyz" in path.suffixes:
        yield from read_task_frames(path, config)
    else:
        raise local.SourceError(f"{path}: the shared source reads mp20_subset.parquet or mp_task_frames.extxyz.gz")


def describe(config: dict) -> dict:
    info = {"path": str(config["path"])}
    if ".extxyz" in Path(config["path"]).suffixes:
        info["run_types"] = config.get("run_types", DEFAULT_RUN_TYPES)
        info["exclude_task_types"] = config.get("exclude_task_types", DEFAULT_EXCLUDED_TASK_TYPES)
    return info


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
