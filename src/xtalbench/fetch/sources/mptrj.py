"""Source `mptrj`: the MPtrj trajectory set (CHGNet's MPtrj_2022.9_full.json, figshare).

File layout: `{"<mp-id>": {"<frame-id>": {"structure": <pymatgen Structure dict>,
"uncorrected_total_energy": eV, "corrected_total_energy": eV, "energy_per_atom", "ef_per_atom",
"e_per_atom_relaxed", "ef_per_atom_relaxed", "force": [[eV/Å]*3]*N, "stress": 3x3 kBar (VASP
sign: positive = compressive), "magmom": [μB]*N or null, "bandgap": eV, "mp_id": "<mp-id>"},
...}, ...}`; frame ids look like `mp-1005792-0-2` (task id, calculation, ionic step).

The file (~11 GB) is stream-parsed with ijson: memory holds one material's frames at a time.

params (`datasets.<name>`): `url` + `md5` (+ `filename`, default the URL's last path part) to
download into the work dir, or `path` to a local copy (`.json` or `.json.gz`; `md5` optional,
checked when given); `max_materials` (optional, first N materials in file order); `retry`
(`max_retries`, `backoff`, `max_backoff`, `timeout`); `progress` (default true).
"""

from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import numpy as np

from xtalbench.core.schema import (
    FrameError,
    Rejected,
    atomic_number,
    frac_to_cart,
    make_frame,
)
from xtalbench.fetch.sources.download import RetryPolicy, download, md5sum, verify_md5
from xtalbench.fetch.sources.local import SourceError
from xtalbench.fetch.sources.units import stress_to_ase

log = logging.getLogger(__name__)

SOURCE = "mptrj"
FRAME_ID = re.compile(r"^(?P<trajectory>.+-\d+)-(?P<step>\d+)$")  # mp-1005792-0-2 → (mp-1005792-0, 2)
CONFIG_KEYS = {"source", "url", "md5", "filename", "path", "max_materials", "retry", "progress"}


class MPtrjError(SourceError):
    """The MPtrj input cannot be read at all (names the file and the cause)."""


def read_records(config: dict, workdir: Path) -> Iterator[dict | Rejected]:
    """Yield one frame row per MPtrj frame (or a Rejected for a frame that cannot be one)."""
    _check_config(config)
    path = local_file(config, Path(workdir))
    limit = config.get("max_materials")
    with _open(path) as handle:
        yield from iter_mptrj(handle, name=str(path), max_materials=limit, progress=config.get("progress", True))


def describe(config: dict) -> dict:
    """Provenance for DATA_VERSION.json: where the file came from and its pinned md5."""
    _check_config(config)
    info: dict[str, Any] = {
        "source": SOURCE,
        "format": "MPtrj JSON (CHGNet), stream-parsed",
        "energy": "uncorrected_total_energy (eV)",
        "stress_conversion": "kBar, VASP sign (+ compressive) -> eV/A^3, ASE sign (+ tensile): -0.1 GPa/kBar",
        "max_materials": config.get("max_materials"),
    }
    if config.get("path"):
        path = Path(config["path"])
        info.update(path=str(path), md5=(config.get("md5") or md5sum(path)).lower())
    else:
        info.update(url=config["url"], md5=str(config["md5"]).lower(), filename=_filename(config))
    return info


def local_file(config: Mapping[str, Any], workdir: Path) -> Path:
    """The MPtrj file on disk: `path` as given (md5-checked if pinned) or downloaded from `url`."""
    if config.get("path"):
        path = Path(config["path"])
        if not path.is_file():
            raise MPtrjError(f"{path}: MPtrj file not found (datasets.<name>.path)")
        if config.get("md5"):
            verify_md5(path, str(config["md5"]), remove_bad=False)  # never delete the user's own file
        return path
    policy = RetryPolicy.from_config(config.get("retry"))
    return download(config["url"], workdir / _filename(config), str(config["md5"]), policy, progress=config.get("progress", True))


def iter_mptrj(
    handle: IO[bytes],
    name: str = "<mptrj>",
    max_materials: int | None = None,
    progress: bool = True,
    buf_size: int = 64 * 1024,
) -> Iterator[dict | Rejected]:
    """Stream frames out of an MPtrj JSON byte stream, one material in memory at a time."""
    import ijson
    from tqdm.auto import tqdm

    bar = tqdm(desc=f"mptrj {Path(name).name}", unit=" frames", disable=not progress, mininterval=1.0)
    materials = 0
    try:
        for material_id, frames in ijson.kvitems(handle, "", use_float=True, buf_size=buf_size):
            if max_materials is not None and materials >= max_materials:
                break
            materials += 1
            if not isinstance(frames, dict):
                yield Rejected(str(material_id), "frames", f"expected an object of frames, got {type(frames).__name__}", _short(frames))
                continue
            for frame_id, record in frames.items():
                try:
                    yield frame_from_record(str(material_id), str(frame_id), record)
                except FrameError as err:
                    yield Rejected.from_error(err, record)
                bar.update()
    except ijson.JSONError as err:
        raise MPtrjError(f"{name}: not valid MPtrj JSON after {materials} materials: {err}") from err
    finally:
        bar.close()


def frame_from_record(material_id: str, frame_id: str, record: Any) -> dict:
    """One MPtrj frame record → frames-table row; raises FrameError naming the frame and field."""
    if not isinstance(record, dict):
        raise FrameError(frame_id, "record", f"expected an object, got {type(record).__name__}")
    lattice, numbers, positions, pbc = structure_arrays(record.get("structure"), frame_id)
    match = FRAME_ID.match(frame_id)
    meta = {"corrected_total_energy": record.get("corrected_total_energy")}
    if record.get("mp_id") not in (None, material_id):
        meta["mp_id"] = record["mp_id"]
    return make_frame(
        frame_id=frame_id,
        material_id=material_id,
        source=SOURCE,
        lattice=lattice,
        numbers=numbers,
        positions=positions,
        pbc=pbc,
        energy=record.get("uncorrected_total_energy"),
        forces=record.get("force"),
        stress=None if record.get("stress") is None else stress_to_ase(record["stress"], "kbar_vasp", frame_id),
        magmoms=record.get("magmom"),
        formation_energy_per_atom=record.get("ef_per_atom"),
        band_gap=record.get("bandgap"),
        trajectory_id=match["trajectory"] if match else None,
        frame_index=int(match["step"]) if match else None,
        meta={k: v for k, v in meta.items() if v is not None},
    )


def structure_arrays(structure: Any, record: str) -> tuple[list[float], list[int], np.ndarray, list[bool]]:
    """A pymatgen Structure dict → (lattice 9, atomic numbers, Cartesian positions, pbc).

    Reads the dict directly (no pymatgen objects: ~50x faster on 1.5 M frames); disordered
    sites and unknown elements raise FrameError naming the record.
    """
    if structure is None:
        raise FrameError(record, "structure", "missing")
    try:
        lattice = structure["lattice"]
        matrix = np.asarray(lattice["matrix"], dtype=np.float64).reshape(3, 3)
        pbc = [bool(p) for p in lattice.get("pbc", (True, True, True))]
        sites = structure["sites"]
        numbers, positions = [], []
        for i, site in enumerate(sites):
            species = site["species"]
            if len(species) != 1 or abs(float(species[0].get("occu", 1.0)) - 1.0) > 1e-6:
                raise FrameError(record, "numbers", f"site {i} is partially occupied (disordered structure)")
            numbers.append(atomic_number(species[0]["element"], record))
            if site.get("xyz") is not None:
                positions.append(site["xyz"])
            else:
                positions.append(frac_to_cart(site["abc"], matrix)[0])  # not `@`: BLAS-kernel-dependent bits
    except FrameError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise FrameError(record, "structure", f"not a pymatgen Structure dict ({type(err).__name__}: {err})") from err
    if not numbers:
        raise FrameError(record, "structure", "has no sites")
    return matrix.ravel().tolist(), numbers, np.asarray(positions, dtype=np.float64), pbc


def _open(path: Path) -> IO[bytes]:
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _filename(config: Mapping[str, Any]) -> str:
    if config.get("filename"):
        return str(config["filename"])
    name = Path(urlparse(str(config["url"])).path).name
    return name or "mptrj.json"


def _check_config(config: Mapping[str, Any]) -> None:
    unknown = set(config) - CONFIG_KEYS
    if unknown:  # a warning, not an error: the fetch command may add keys of its own
        log.warning("mptrj source ignores params %s (it reads: %s)", sorted(unknown), sorted(CONFIG_KEYS))
    if not config.get("path"):
        if not config.get("url"):
            raise ValueError("mptrj source: set `url` (with `md5`) or `path` in params")
        if not config.get("md5"):
            raise ValueError("mptrj source: `md5` is required with `url`: a download is only used once its checksum is pinned")


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
