"""The fetch stage: a source's records → validated frames table + quarantine + version pin.

Every record read ends kept or quarantined (with the validation error naming the record and
the field); the counts add up and go to metrics/<name>/fetch.json.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

from tqdm import tqdm

from xtalbench.core.project import ParquetSink, Paths, iter_batches, write_json
from xtalbench.core.schema import (
    FRAMES_SCHEMA,
    QUARANTINE_SCHEMA,
    FrameError,
    Rejected,
    raw_json,
    validate_frame,
)
from xtalbench.fetch.sources import get_source

PINNED_PACKAGES = ("xtalbench", "pymatgen", "ase", "pyarrow", "numpy", "mp-api", "ijson")
SECRET_ENV = ("MP_API_KEY", "PMG_MAPI_KEY")


def fetch(dataset: str, config: dict[str, Any], paths: Paths) -> dict[str, Any]:
    """Run one dataset's source and write frames, quarantine, fetch metrics and DATA_VERSION."""
    source = get_source(config["source"])
    limit = config.get("limit")
    workdir = paths.data_dir / "download"
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    seen: dict[str, int] = {}
    with ParquetSink(paths.frames, FRAMES_SCHEMA) as kept, ParquetSink(paths.quarantine, QUARANTINE_SCHEMA) as quarantine:
        records = source.read_records(config, workdir)
        for record in tqdm(records, desc=f"fetch {dataset}", unit=" records", mininterval=2):
            counts["read"] += 1
            rejected = record if isinstance(record, Rejected) else check(record, seen, counts["read"])
            if rejected is None:
                kept.append(record)
            else:
                quarantine.append(rejected.as_row())
                reasons[rejected.field] += 1
            if limit is not None and counts["read"] >= int(limit):
                break
    counts["kept"], counts["quarantined"] = kept.rows, quarantine.rows
    if counts["kept"] + counts["quarantined"] != counts["read"]:  # the invariant every stage keeps
        raise RuntimeError(f"fetch {dataset}: {counts['kept']} kept + {counts['quarantined']} quarantined != {counts['read']} read")
    if counts["kept"] == 0:
        raise SystemExit(f"fetch {dataset}: no valid frames among {counts['read']} records (see {paths.quarantine})")
    summary = {**counts, "quarantined_by_field": dict(sorted(reasons.items())), "materials": len({m for m in _material_ids(paths)})}
    write_json(summary, paths.metrics("fetch"))
    write_json(redact(version_pin(dataset, config, source.describe(config), paths, summary)), paths.data_version)
    return summary


def check(record: dict[str, Any], seen: dict[str, int], position: int) -> Rejected | None:
    """Validate a row; a repeated frame_id is quarantined naming the first occurrence."""
    try:
        validate_frame(record)
    except FrameError as error:
        return Rejected.from_error(error, record)
    frame_id = record["frame_id"]
    if frame_id in seen:
        return Rejected(frame_id, "frame_id", f"duplicate of record #{seen[frame_id]}", raw_json(record))
    seen[frame_id] = position
    return None


def _material_ids(paths: Paths):
    for batch in iter_batches(paths.frames, columns=["material_id"]):
        yield from batch.column(0).to_pylist()


def version_pin(dataset: str, config: dict, described: dict, paths: Paths, counts: dict) -> dict[str, Any]:
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
        "outputs_sha256": {p.name: sha256(p) for p in (paths.frames, paths.quarantine)},
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
