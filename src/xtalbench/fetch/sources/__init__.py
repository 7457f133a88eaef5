"""Data sources for the fetch stage, one module per source.

Every source module exposes
    read_records(config, workdir) -> Iterator[frame row | Rejected]   (streams; never holds all)
    describe(config) -> dict                                         (for DATA_VERSION.json; no secrets)
and converts units and sign conventions to the frames table's (see xtalbench.core.schema) itself.
"""

from __future__ import annotations

import importlib
from types import ModuleType

SOURCES = {
    "shared": "xtalbench.fetch.sources.shared",
    "local": "xtalbench.fetch.sources.local",
    "mp-api": "xtalbench.fetch.sources.mp_api",
    "mptrj": "xtalbench.fetch.sources.mptrj",
}


def get_source(name: str) -> ModuleType:
    if name not in SOURCES:
        raise SystemExit(f"unknown source {name!r}: choose one of {', '.join(SOURCES)}")
    return importlib.import_module(SOURCES[name])
