"""Typed, validated params: each stage parses its own `params.yaml` section into a pydantic model.

Every model subclasses `StageParams` (unknown keys, wrong types and out-of-range values are
refused); `parse_section` turns pydantic's report into one `ParamsError` that names the file,
the key, the value given and what is allowed.

`read_params(path)` loads a params file for a stage command: YAML errors, a top level that is not
a mapping, a section nobody reads (`SECTIONS`, e.g. a typo'd `splt:`) and a dataset name outside
`DATASET_NAME_PATTERN` are refused there, before any stage runs. A new section is one line in
`SECTIONS`: its name and its model (`module:Model`) or parser (`module:load`, called as
`load(params, file)`), or None when it is validated elsewhere (`validate_all` then skips it).

This module also holds the `compute:` model (the executor of `core.parallel`), since `compute`
belongs to `core`.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from xtalbench.core.errors import ParamsError

# Dataset names become folder names under datasets/, splits/, metrics/: no separators, no dots first.
DATASET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
DatasetName = Annotated[str, StringConstraints(pattern=DATASET_NAME_PATTERN)]
PARAMS_FILE = "params.yaml"

# Constrained types the stage models share.
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]  # a share that must leave something behind
# Vocabulary several sections share (kept here so that no stage's params import another stage).
STRATEGY_NAMES = ("loco", "random", "element", "spacegroup", "forward")  # == xtalbench.split.STRATEGIES
Strategy = Literal["loco", "random", "element", "spacegroup", "forward"]
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"  # xtalbench.core.device.resolve_device

# Every top-level section a params file may hold → what parses it: "module:function" called as
# `function(params, file)`, or "module:Model" (a StageParams subclass, parsed with
# `parse_section`); None: known, validated by its own reader. Add new sections here.
SECTIONS: dict[str, str | None] = {
    "datasets": "xtalbench.fetch.params:load_datasets",
    "compute": "xtalbench.core.params:load_compute",
    "dedup": "xtalbench.dedup.params:load",
    "featurize": "xtalbench.featurize.params:load",
    "split": "xtalbench.split.params:load",
    "train": "xtalbench.train.params:load",
    "evaluate": "xtalbench.evaluate.params:load",
    "report": "xtalbench.report.params:load",
    "gates": "xtalbench.governance.params:load",
    "plan": "xtalbench.tools.params:load",
    "dynamics": "xtalbench.dynamics.params:DynamicsParams",
    "finetune": "xtalbench.finetune.params:FinetuneParams",
    "zeroshot": "xtalbench.zeroshot.params:ZeroshotParams",
    "diatomics": "xtalbench.diatomics.params:DiatomicsParams",
}


class StageParams(BaseModel):
    """Base of every params model: strict about keys, immutable once parsed."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def as_config(self) -> dict[str, Any]:
        """The keys the file set (validated, coerced) as a plain dict, for stage functions that
        take a mapping and apply their own defaults: behaviour is that of the raw section."""
        return self.model_dump(exclude_unset=True)


class StrictParams(StageParams):
    """A StageParams that also refuses coercions: a quoted number ("0.5"), a bool for a number,
    a float for an integer (YAML gives every value its own type, so a mismatch is a mistake)."""

    model_config = ConfigDict(strict=True)


Model = TypeVar("Model", bound=BaseModel)


# --- error messages --------------------------------------------------------------------------


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[list[Any], Any]:
    """The parts of pydantic's `loc` that are keys of `data` and the value found there. Other
    parts are union member tags (`ThresholdParams`, `constrained-float`), except a last part
    that is not there: a missing or unknown key (no value)."""
    parts: list[Any] = []
    for i, part in enumerate(loc):
        in_mapping = isinstance(data, Mapping) and part in data
        in_list = isinstance(data, (list, tuple)) and isinstance(part, int) and 0 <= part < len(data)
        if in_mapping or in_list:
            data = data[part]
        elif not isinstance(data, (Mapping, list, tuple)):
            return parts, data  # a scalar where a mapping was expected (normalised by a validator)
        elif i == len(loc) - 1:
            return [*parts, part], "<missing>"
        else:
            continue
        parts.append(part)
    return parts, data


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation may hold (through Optional, Union, Annotated, list, dict)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found += _models_in(arg)
    return found


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the (nested) model that holds the key at `loc`; [] when unknown."""
    current: list[type[BaseModel]] = [model]
    for part in loc[:-1]:
        nxt: list[type[BaseModel]] = []
        for m in current:
            if isinstance(part, str) and part in m.model_fields:
                nxt += _models_in(m.model_fields[part].annotation)
            elif "root" in m.model_fields:  # a RootModel (a list of rules)
                nxt += _models_in(m.model_fields["root"].annotation)
        current = nxt or current  # a dict key (dataset name) or list index: same models
    keys: list[str] = []
    for m in current:
        keys += [k for k in m.model_fields if k not in keys and k != "root"]
    return keys


def describe_errors(error: ValidationError, data: Any, where: str, model: type[BaseModel] | None = None) -> str:
    """pydantic's errors as `key = value: what is wrong` clauses, joined by '; '."""
    lines: list[str] = []
    for item in error.errors():
        loc = tuple(item["loc"])
        parts, value = _data_path(data, loc)
        key = ".".join(str(p) for p in (where, *parts) if p != "")
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc) if model is not None else []
            hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            text = f"{key}: unknown key"
            text += f" (did you mean {hint[0]!r}?)" if hint else ""
            text += f"; allowed: {', '.join(allowed)}" if allowed else ""
        elif item["type"] == "missing":
            text = f"{key}: required key is missing"
        else:
            text = f"{key} = {value!r}: {item['msg'].removeprefix('Value error, ')}"
        if text not in lines:
            lines.append(text)
    return "; ".join(lines)


# --- parsing ---------------------------------------------------------------------------------


def parse_section(model: type[Model], params: Mapping[str, Any], section: str, file: str = PARAMS_FILE) -> Model:
    """`params[section]` (a missing or null section means all defaults) as a validated `model`."""
    data = params.get(section)
    data = {} if data is None else data
    return parse_value(model, data, section, file)


def parse_value(model: type[Model], data: Any, where: str, file: str = PARAMS_FILE) -> Model:
    """Validate one value (a section, a dataset entry) against `model`."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ParamsError(f"{file}: {describe_errors(error, data, where, model)}") from None


def check_choice(value: Any, allowed: Mapping[str, Any] | list[str] | tuple[str, ...], key: str, file: str = PARAMS_FILE) -> str:
    """`value` if it is one of `allowed`, else a ParamsError naming key, value and the choices."""
    if not isinstance(value, str) or value not in allowed:
        hint = difflib.get_close_matches(str(value), list(allowed), n=1)
        more = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ParamsError(f"{file}: {key} = {value!r}: not one of {', '.join(allowed)}{more}")
    return value


def check_dataset_name(name: Any, where: str, file: str = PARAMS_FILE) -> str:
    """A dataset name that is safe as a folder name (DATASET_NAME_PATTERN)."""
    if not isinstance(name, str) or not re.fullmatch(DATASET_NAME_PATTERN, name):
        raise ParamsError(
            f"{file}: {where}: {name!r} is not a valid dataset name (letters, digits, '_', '.', '-'; "
            f"starting with a letter or digit; at most 64 characters; pattern {DATASET_NAME_PATTERN})"
        )
    return name


def check_sections(params: Mapping[str, Any], file: str = PARAMS_FILE) -> None:
    """Refuse top-level sections no stage reads (a typo'd `splt:` would be ignored otherwise)."""
    for name in params:
        if name not in SECTIONS:
            hint = difflib.get_close_matches(str(name), list(SECTIONS), n=1)
            more = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ParamsError(f"{file}: unknown section {name!r}{more}; known sections: {', '.join(SECTIONS)}")


def dataset_names(params: Mapping[str, Any], file: str = PARAMS_FILE) -> list[str]:
    """The keys of `datasets`, each checked against DATASET_NAME_PATTERN."""
    datasets = params.get("datasets") or {}
    if not isinstance(datasets, Mapping):
        raise ParamsError(f"{file}: datasets must be a mapping of name -> entry, got {type(datasets).__name__}")
    return [check_dataset_name(name, "datasets", file) for name in datasets]


def require_dataset(params: Mapping[str, Any], dataset: str, file: str = PARAMS_FILE) -> Any:
    """The raw `datasets.<dataset>` entry; the name must be safe and configured."""
    check_dataset_name(dataset, "dataset", file)
    names = dataset_names(params, file)
    if dataset not in names:
        raise ParamsError(f"{file}: dataset {dataset!r} is not in `datasets` (have: {', '.join(names) or 'none'})")
    return params["datasets"][dataset]


def check_known_datasets(names: list[str], params: Mapping[str, Any], where: str, file: str = PARAMS_FILE) -> None:
    """Datasets named by another section (`train.datasets`, `dedup.overrides`) must be configured."""
    known = dataset_names(params, file)
    for name in names:
        if name not in known:
            raise ParamsError(f"{file}: {where} = {name!r}: not a dataset of `datasets` (have: {', '.join(known) or 'none'})")


def read_params(path: str | Path = PARAMS_FILE, dataset: str | None = None) -> dict[str, Any]:
    """A stage's params file: valid YAML, a mapping of known sections, safe dataset names
    (and `dataset`, when given, configured)."""
    file = str(path)
    try:
        with open(path) as handle:
            params = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ParamsError(f"{file}: no such params file") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{file}: not valid YAML ({error})".replace("\n", " ")) from None
    params = {} if params is None else params
    if not isinstance(params, Mapping):
        raise ParamsError(f"{file}: the top level must be a mapping of sections, got {type(params).__name__}")
    check_sections(params, file)
    dataset_names(params, file)
    if dataset is not None:
        require_dataset(params, dataset, file)
    return dict(params)


def section_loader(name: str) -> Callable[[Mapping[str, Any], str], Any] | None:
    """The registered parser of a section as `load(params, file)`, or None."""
    target = SECTIONS.get(name)
    if target is None:
        return None
    module, _, attr = target.partition(":")
    loader = getattr(importlib.import_module(module), attr)
    if isinstance(loader, type) and issubclass(loader, BaseModel):
        model = loader
        return lambda params, file=PARAMS_FILE: parse_section(model, params, name, file)
    return loader


def validate_all(params: Mapping[str, Any], file: str = PARAMS_FILE) -> dict[str, Any]:
    """Every section present parsed by its registered loader: {section: typed value}."""
    check_sections(params, file)
    parsed: dict[str, Any] = {}
    for name in params:
        loader = section_loader(name)
        if loader is not None:
            parsed[name] = loader(params, file)
    return parsed


# --- compute (core.parallel) -----------------------------------------------------------------


class ComputeParams(StrictParams):
    """params `compute:` — how featurize and evaluate map over row-group chunks."""

    executor: Literal["local", "dask"] = "local"
    scheduler_address: str | None = None  # dask: null starts a LocalCluster
    n_workers: PositiveInt = 2
    chunk_rows: PositiveInt = 2000
    window: PositiveInt | None = None  # chunks in flight; null = 2 x n_workers


def load_compute(params: Mapping[str, Any], file: str = PARAMS_FILE) -> ComputeParams:
    return parse_section(ComputeParams, params, "compute", file)
