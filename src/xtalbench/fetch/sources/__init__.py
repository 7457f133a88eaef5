"""Data sources for the fetch stage, one module per source.

Every source module exposes
    read_records(config, workdir) -> Iterator[frame row | Rejected | FileRead]   (streams; never holds all)
    describe(config) -> dict                                         (for DATA_VERSION.json; no secrets)
and converts units and sign conventions to the frames table's (see xtalbench.core.schema) itself.
A source that reads files yields a `FileRead` after each one (with the reason when the file could
not be read): the fetch stage counts files read = kept + quarantined from them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from xtalbench.core.errors import XtalbenchError


@dataclass(frozen=True)
class FileRead:
    """End of one input file: `error` is None when it was read to the end, else why it was not."""

    file: str
    error: str | None = None

SOURCES = {
    "shared": "xtalbench.fetch.sources.shared",
    "local": "xtalbench.fetch.sources.local",
    "mp-api": "xtalbench.fetch.sources.mp_api",
    "mptrj": "xtalbench.fetch.sources.mptrj",
}


def get_source(name: str) -> ModuleType:
    if name not in SOURCES:
        raise XtalbenchError(f"unknown source {name!r}: choose one of {', '.join(SOURCES)}")
    return importlib.import_module(SOURCES[name])
