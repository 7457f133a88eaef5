"""The `datasets:` section: one entry per dataset, validated by its `source`.

Each source reads different keys (`xtalbench.fetch.sources.<source>`), so each has its own
model in `SOURCE_PARAMS`; `source` itself is required and must be a key of
`xtalbench.fetch.sources.SOURCES`. Every model's defaults are the source's own.
A new source: add its model to `SOURCE_PARAMS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from xtalbench.core.errors import ParamsError
from xtalbench.core.params import (
    PARAMS_FILE,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    StrictParams,
    check_choice,
    check_dataset_name,
    dataset_names,
    parse_value,
    require_dataset,
)

StressUnit = Literal["eV/A3", "GPa", "kbar_vasp"]  # xtalbench.fetch.sources.units.stress_to_ase


class DatasetParams(StrictParams):
    """Keys every source accepts."""

    source: str
    limit: PositiveInt | None = None  # keep only the first N records read (null: all)


class ExtxyzKeys(StrictParams):
    """How extxyz info/arrays keys map to frame fields (`local.read_extxyz`)."""

    energy_key: str | None = None  # default: the calculator results ASE attached
    forces_key: str | None = None
    stress_key: str | None = None
    stress_unit: StressUnit = "eV/A3"
    material_id_key: str = "material_id"
    frame_id_key: str = "frame_id"
    frame_index_key: str = "frame_index"
    trajectory_id_key: str = "trajectory_id"
    frame_id_parts: list[str] = []
    meta_keys: list[str] = []


class SharedParams(DatasetParams, ExtxyzKeys):
    """`shared`: mp20_subset.parquet, mp_task_frames.extxyz.gz or a MatterSim benchmark set."""

    source: Literal["shared"]
    path: str = Field(min_length=1)
    run_types: list[str] = ["GGA", "GGA+U"]  # task frames: kept functionals
    exclude_task_types: list[str] = ["NSCF Line", "NSCF Uniform"]
    sample: PositiveInt | None = None  # MatterSim sets: a seeded sample of N frames (null: all)
    seed: int = 0
    level_of_theory: str | None = None


class LocalParams(DatasetParams, ExtxyzKeys):
    """`local`: a file or folder of extxyz, CIF, pymatgen JSON or frames-table Parquet."""

    source: Literal["local"]
    path: str = Field(min_length=1)
    format: Literal["auto", "extxyz", "cif", "json", "parquet"] = "auto"
    labels: str | None = None  # CSV of targets beside the structures: `id` + label columns (sources/labels.py)


class RetryParams(StrictParams):
    """`xtalbench.fetch.sources.download.RetryPolicy`."""

    max_retries: NonNegativeInt = 5
    backoff: NonNegativeFloat = 1.0
    max_backoff: NonNegativeFloat = 60.0
    timeout: PositiveFloat = 60.0


class MpApiParams(DatasetParams):
    """`mp-api`: a pinned Materials Project summary query (`xtalbench.fetch.sources.mp_api`)."""

    source: Literal["mp-api"]
    query: dict[str, Any] = {}
    fields: list[str] | None = None  # null: mp_api.DEFAULT_FIELDS
    chunk_size: int | None = Field(default=None, ge=1, le=1000)  # the API's page limit
    sort: str | None = "material_id"
    endpoint: str | None = None
    retry: RetryParams | None = None
    progress: bool = True


class MptrjParams(DatasetParams):
    """`mptrj`: CHGNet's MPtrj JSON, downloaded (`url` + `md5`) or a local copy (`path`)."""

    source: Literal["mptrj"]
    url: str | None = None
    md5: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{32}$")
    filename: str | None = None
    path: str | None = None
    max_materials: PositiveInt | None = None
    retry: RetryParams | None = None
    progress: bool = True

    @model_validator(mode="after")
    def _where_from(self) -> MptrjParams:
        if not self.path and not (self.url and self.md5):
            raise ValueError("set `path`, or `url` with its `md5` (a download is used only once its checksum is pinned)")
        return self


# source name → its entry model (the sources themselves: xtalbench.fetch.sources.SOURCES)
SOURCE_PARAMS: dict[str, type[DatasetParams]] = {
    "shared": SharedParams,
    "local": LocalParams,
    "mp-api": MpApiParams,
    "mptrj": MptrjParams,
}


def parse_dataset(name: str, entry: Any, file: str = PARAMS_FILE) -> DatasetParams:
    """One `datasets.<name>` entry, validated by the model of its `source`."""
    where = f"datasets.{check_dataset_name(name, 'datasets', file)}"
    if not isinstance(entry, Mapping):
        raise ParamsError(f"{file}: {where} = {entry!r}: expected a mapping with at least `source`")
    if "source" not in entry:
        raise ParamsError(f"{file}: {where}.source: required key is missing (one of {', '.join(SOURCE_PARAMS)})")
    check_choice(entry["source"], SOURCE_PARAMS, f"{where}.source", file)
    return parse_value(SOURCE_PARAMS[entry["source"]], entry, where, file)


def dataset_entry(params: Mapping[str, Any], dataset: str, file: str = PARAMS_FILE) -> DatasetParams:
    """The validated entry of `dataset` (which must be configured)."""
    return parse_dataset(dataset, require_dataset(params, dataset, file), file)


def load_datasets(params: Mapping[str, Any], file: str = PARAMS_FILE) -> dict[str, DatasetParams]:
    """Every entry of `datasets`."""
    return {name: parse_dataset(name, params["datasets"][name], file) for name in dataset_names(params, file)}

