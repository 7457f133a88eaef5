"""The fetch stage: a source's records → validated frames table + quarantine + version pin.

Every record read ends kept or quarantined (with the validation error naming the record and
the field); the counts add up and go to metrics/<name>/fetch.json. Sources that read files also
report each file: `files.read = files.kept + files.quarantined` (an unreadable file is a
quarantine row with field `file`, so quarantine.parquet holds `quarantined + files.quarantined`
rows).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from tqdm import tqdm

from xtalbench.core.io import StageOutputs
from xtalbench.core.project import ParquetSink, Paths, iter_batches, write_json
from xtalbench.core.schema import (
    FRAMES_SCHEMA,
    QUARANTINE_SCHEMA,
    FrameError,
    Rejected,
    raw_json,
    validate_frame,
)
from xtalbench.fetch.sources import FileRead, get_source
from xtalbench.fetch.sources.local import SourceError

PINNED_PACKAGES = ("xtalbench", "pymatgen", "ase", "pyarrow", "numpy", "mp-api", "ijson")
SECRET_ENV = ("MP_API_KEY", "PMG_MAPI_KEY")


def fetch(dataset: str, config: dict[str, Any], paths: Paths) -> dict[str, Any]:
    """Run one dataset's source and write frames, quarantine, fetch metrics and DATA_VERSION.

    All four are written to temporaries and moved into place together (metrics last) only when
    the run completes (`core.io.StageOutputs`): an interrupted or failed fetch leaves the previous
    outputs untouched. Third-party warnings are summarised once at the end."""
    source = get_source(config["source"])
    limit = config.get("limit")
    workdir = paths.data_dir / "download"
    counts: Counter[str] = Counter()
    files: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    file_problems: list[str] = []
    seen: dict[str, int] = {}
    with StageOutputs(f"fetch {dataset}") as out:
        frames_tmp, quarantine_tmp = out.path(paths.frames), out.path(paths.quarantine)
        with ParquetSink(frames_tmp, FRAMES_SCHEMA) as kept, ParquetSink(quarantine_tmp, QUARANTINE_SCHEMA) as quarantine:
            records = _named_errors(source.read_records(config, workdir), config, counts)
            for record in tqdm(records, desc=f"fetch {dataset}", unit=" records", mininterval=2):
                if isinstance(record, FileRead):
                    files["read"] += 1
                    if record.error is None:
                        files["kept"] += 1
                    else:
                        files["quarantined"] += 1
                        quarantine.append(Rejected(record.file, "file", record.error).as_row())
                        file_problems.append(f"{record.file}: {record.error}")
                    continue
                counts["read"] += 1
                rejected = record if isinstance(record, Rejected) else check(record, seen, counts["read"])
                if rejected is None:
                    kept.append(record)
                else:
                    quarantine.append(rejected.as_row())
                    reasons[rejected.field] += 1
                if limit is not None and counts["read"] >= int(limit):
                    break
        counts["kept"], counts["quarantined"] = kept.rows, quarantine.rows - files["quarantined"]
        if counts["kept"] + counts["quarantined"] != counts["read"]:  # the invariant every stage keeps
            raise RuntimeError(f"fetch {dataset}: {counts['kept']} kept + {counts['quarantined']} quarantined != {counts['read']} read")
        if files["kept"] + files["quarantined"] != files["read"]:
            raise RuntimeError(f"fetch {dataset}: {files['kept']} files kept + {files['quarantined']} quarantined != {files['read']} read")
        if counts["kept"] == 0:
            raise SourceError(_nothing_kept(dataset, counts, reasons, file_problems))
        summary: dict[str, Any] = {**counts, "quarantined_by_field": dict(sorted(reasons.items())),
                                   "materials": len(set(_material_ids(frames_tmp)))}  # fmt: skip
        if files["read"]:
            summary["files"] = {k: files[k] for k in ("read", "kept", "quarantined")}
        write_json(summary, out.path(paths.metrics("fetch")))
        outputs = {paths.frames.name: frames_tmp, paths.quarantine.name: quarantine_tmp}
        pin = version_pin(dataset, config, source.describe(config), outputs, summary)
        pin["warnings"] = out.warnings.as_dict() if out.warnings is not None else {}
        write_json(redact(pin), out.path(paths.data_version))
    if file_problems:  # said once, loudly: these files contributed nothing (or only their first records)
        more = f" (and {len(file_problems) - 3} more)" if len(file_problems) > 3 else ""
        print(f"fetch {dataset}: {len(file_problems)} unreadable file(s), listed in {paths.quarantine} with field 'file': "
              + "; ".join(file_problems[:3]) + more, file=sys.stderr)
    return summary


def _named_errors(records: Iterator[Any], config: dict[str, Any], counts: Counter[str]) -> Iterator[Any]:
    """A source's records; a read error the source did not handle (a truncated gzip in a single
    `shared` file) becomes a SourceError naming the input and where it stopped."""
    try:
        yield from records
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as error:
        where = config.get("path") or config.get("url") or config["source"]
        raise SourceError(f"{where}: unreadable after {counts['read']} record(s) ({type(error).__name__}: {error})") from error


def _nothing_kept(dataset: str, counts: Counter, reasons: Counter, file_problems: list[str]) -> str:
    """Why a fetch kept nothing: the unreadable files first (they are usually the cause)."""
    parts = [f"fetch {dataset}: no valid frames among {counts['read']} record(s)"]
    if file_problems:
        shown = "; ".join(file_problems[:5]) + (f"; ... {len(file_problems) - 5} more" if len(file_problems) > 5 else "")
        parts.append(f"unreadable file(s): {shown}")
    if reasons:
        parts.append("quarantined by field: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    return "; ".join(parts) + " (previous outputs kept)"


def check(record: dict[str, Any], seen: dict[str, int], position: int) -> Rejected | None:
    """Validate a row; a repeated frame_id is quarantined naming the first occurrence."""
    try:
        validate_frame(record)
    except FrameError as error:
        return Rejected.from_error(error, record)
    except (TypeError, ValueError) as error:  # a malformed value validate_frame did not foresee
        return Rejected(str(record.get("frame_id") or f"#{position}"), "row", f"{type(error).__name__}: {error}", raw_json(record))
    frame_id = record["frame_id"]
    if frame_id in seen:
        return Rejected(frame_id, "frame_id", f"duplicate of record #{seen[frame_id]}", raw_json(record))
    seen[frame_id] = position
    return None


def _material_ids(frames: Path):
    for batch in iter_batches(frames, columns=["material_id"]):
        yield from batch.column(0).to_pylist()


def version_pin(dataset: str, config: dict, described: dict, outputs: dict[str, Path], counts: dict) -> dict[str, Any]:
    """What DATA_VERSION.json records: enough to tell two fetches of the 'same' data apart."""
    inputs = {}
    path = config.get("path")
    if path and Path(path).is_file():
        inputs[str(path)] = sha256(Path(path))
    elif path and Path(path).is_dir():
        inputs = {str(p): sha256(p) for p in sorted(Path(path).rglob("*")) if p.is_file()}
    return {
        "dataset": dataset,
        "source": config["source"],
        "source_details": described,
        "inputs_sha256": inputs,
        "outputs_sha256": {name: sha256(path) for name, path in sorted(outputs.items())},
        "counts": {k: counts[k] for k in ("read", "kept", "quarantined")},
        "limit": config.get("limit"),
        "packages": package_versions(),
        "fetched_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
    }


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PINNED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def redact(value: Any) -> Any:
    """Replace any secret from the environment wherever it occurs (belt and braces)."""
    secrets = [os.environ[k] for k in SECRET_ENV if os.environ.get(k)]
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
