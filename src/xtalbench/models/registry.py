"""Model registry: one YAML per model in `models/` → a `ModelSpec`; `load_model` → a predictor.

A spec declares what the model is (kind, checkpoint or foundation name, licence), what it was
trained on (for contamination checks) and what its energies mean (`energy_kind`: `total` DFT-like
energies, or `formation` = E_form × N for models trained on formation energies). Fields that
differ per dataset (a pipeline-trained model's checkpoint and energy kind) may be templated with
`{dataset}`, `{strategy}`, `{fold}` or given as a mapping dataset → value; `resolve(dataset)`
turns them into plain values.

Level of theory (Matbench Discovery style): `functional` (the DFT the training labels came
from), `energy_convention` (what its total energies mean: `mp2020-corrected` PBE/PBE+U totals with
MP2020 corrections, `raw` uncorrected totals of its functional, `formation` E_form x N, `empirical`
not DFT-referenced) with the `evidence` for it, `hardware` notes, and `environment:` (the pinned
stack it runs in; see `xtalbench.models.env`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xtalbench.core.errors import XtalbenchError
from xtalbench.models.env import Environment, EnvironmentSpecError, parse_environment

MODELS_DIR = Path("models")
KINDS = ("mace-foundation", "mace-file", "mace-trained", "chgnet", "ase", "sevennet", "matgl")
FUNCTIONALS = ("PBE", "PBE+U", "PBE/PBE+U", "PBEsol", "r2SCAN", "unknown", "none")
ENERGY_CONVENTIONS = ("mp2020-corrected", "raw", "formation", "empirical")
STATUSES = ("ok", "unreliable")
ENERGY_KINDS = ("total", "formation")
FOUNDATION_FAMILIES = ("mace_mp", "mace_off")
# Short names accepted for mace-torch's foundation checkpoints (keys of mace_mp_urls otherwise).
FOUNDATION_ALIASES = {"mpa-0": "medium-mpa-0", "omat-0": "medium-omat-0"}
_REQUIRED_BY_KIND = {
    "mace-foundation": ("foundation",),
    "mace-file": ("checkpoint",),
    "mace-trained": ("checkpoint",),
    "chgnet": (),
    "ase": ("calculator",),
    "sevennet": ("checkpoint",),
    "matgl": ("checkpoint",),
}


class ModelSpecError(XtalbenchError, ValueError):
    """A malformed model YAML; names the file and the field."""

    def __init__(self, source: str, field_name: str, reason: str):
        self.source, self.field, self.reason = source, field_name, reason
        super().__init__(f"model spec {source}: field {field_name!r}: {reason}")


@dataclass(frozen=True)
class TrainingSet:
    """What a model was trained on: enough to decide whether a test material was seen."""

    name: str
    database: str  # e.g. "Materials Project", or "xtalbench:<dataset>" for pipeline-trained models
    version: str | None = None  # e.g. "2021.2.8"; null for pipeline-trained models
    ids_file: str | None = None  # Parquet/CSV/text file of material ids, when published


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    licence: str
    training_set: TrainingSet
    energy_kind: str | dict[str, str] = "total"
    checkpoint: str | None = None  # file path (mace-file, mace-trained; optional local copy for foundation)
    foundation: str | None = None  # mace-torch foundation name: small, medium, large, mpa-0, omat-0, ...
    family: str = "mace_mp"  # mace_mp | mace_off
    calculator: str | None = None  # ase kind: import path of an ASE Calculator class
    calculator_kwargs: dict[str, Any] = field(default_factory=dict)
    elements: tuple[str, ...] | None = None  # elements the model covers, when not discoverable
    versions: dict[str, str] = field(default_factory=dict)  # pinned package versions
    defaults: dict[str, Any] = field(default_factory=dict)  # batch_size, dtype, ... per model
    description: str = ""
    url: str | None = None
    functional: str = "unknown"  # level of theory of the training labels (FUNCTIONALS)
    energy_convention: str | None = None  # ENERGY_CONVENTIONS; None: not recorded
    evidence: str = ""  # how the energy convention was established (measured here, or the model card)
    hardware: str = ""  # where it runs and how fast, in words
    parameters: int | None = None  # number of trainable parameters
    environment: Environment | None = None  # its own pinned environment (None: the main one)
    status: str = "ok"  # STATUSES: "unreliable" = runs, but its predictions are known to be wrong here
    known_issues: str = ""  # what is wrong and the evidence (required when status is not ok)
    message_aggregation: str | None = None  # matgl: "destination" for checkpoints older than matgl PR 761
    source: str = ""  # the YAML file this spec came from

    @property
    def mp2020_corrected(self) -> bool | None:
        """Whether its total energies already carry MP2020 corrections (None: not recorded)."""
        if self.energy_convention == "mp2020-corrected":
            return True
        if self.energy_convention == "raw":
            return False
        value = self.defaults.get("mp2020_corrected")
        return None if value is None else bool(value)

    @property
    def per_fold(self) -> bool:
        """Fold-trained models predict each fold's val+test rows; the others every frame once."""
        return self.kind == "mace-trained"

    def resolve(self, dataset: str) -> ModelSpec:
        """Per-dataset values made concrete (energy_kind mapping, `{dataset}` in paths)."""
        energy_kind = self.energy_kind
        if isinstance(energy_kind, dict):
            if dataset not in energy_kind and "default" not in energy_kind:
                raise ModelSpecError(self.source, "energy_kind", f"no entry for dataset {dataset!r} and no `default`")
            energy_kind = energy_kind.get(dataset, energy_kind.get("default"))
        ts = self.training_set
        training_set = dataclasses.replace(
            ts,
            name=ts.name.replace("{dataset}", dataset),
            database=ts.database.replace("{dataset}", dataset),
            ids_file=None if ts.ids_file is None else ts.ids_file.replace("{dataset}", dataset),
        )
        checkpoint = self.checkpoint
        if checkpoint is not None and "{strategy}" not in checkpoint:
            checkpoint = checkpoint.replace("{dataset}", dataset)
        return dataclasses.replace(self, energy_kind=energy_kind, training_set=training_set, checkpoint=checkpoint)

    def checkpoint_for(self, dataset: str, strategy: str, fold: int) -> Path:
        """The checkpoint of a fold-trained model."""
        if self.checkpoint is None:
            raise ModelSpecError(self.source, "checkpoint", "missing")
        return Path(self.checkpoint.format(dataset=dataset, strategy=strategy, fold=fold))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_spec(data: Any, source: str = "<dict>") -> ModelSpec:
    """Validate a YAML mapping and build a ModelSpec; errors name the file and the field."""
    if not isinstance(data, dict):
        raise ModelSpecError(source, "<root>", f"expected a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(ModelSpec)} - {"source"}
    data = {k: v for k, v in data.items() if k != "_source"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ModelSpecError(source, unknown[0], f"unknown field (allowed: {', '.join(sorted(known))})")
    for key in ("name", "kind", "licence", "training_set"):
        if not data.get(key):
            raise ModelSpecError(source, key, "missing")
    if not isinstance(data["name"], str):
        raise ModelSpecError(source, "name", "must be a string")
    kind = data["kind"]
    if kind not in KINDS:
        raise ModelSpecError(source, "kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    for key in _REQUIRED_BY_KIND[kind]:
        if not data.get(key):
            raise ModelSpecError(source, key, f"required for kind {kind!r}")
    energy_kind = data.get("energy_kind", "total")
    values = energy_kind.values() if isinstance(energy_kind, dict) else [energy_kind]
    for value in values:
        if value not in ENERGY_KINDS:
            raise ModelSpecError(source, "energy_kind", f"{value!r} is not one of {', '.join(ENERGY_KINDS)}")
    family = data.get("family", "mace_mp")
    if family not in FOUNDATION_FAMILIES:
        raise ModelSpecError(source, "family", f"{family!r} is not one of {', '.join(FOUNDATION_FAMILIES)}")
    ts = data["training_set"]
    if not isinstance(ts, dict):
        raise ModelSpecError(source, "training_set", "expected a mapping with name, database, version, ids_file")
    ts_unknown = sorted(set(ts) - {f.name for f in dataclasses.fields(TrainingSet)})
    if ts_unknown:
        raise ModelSpecError(source, f"training_set.{ts_unknown[0]}", "unknown field")
    for key in ("name", "database"):
        if not ts.get(key):
            raise ModelSpecError(source, f"training_set.{key}", "missing")
    functional = str(data.get("functional") or "unknown")
    if functional not in FUNCTIONALS:
        raise ModelSpecError(source, "functional", f"{functional!r} is not one of {', '.join(FUNCTIONALS)}")
    convention = data.get("energy_convention")
    if convention is not None and convention not in ENERGY_CONVENTIONS:
        raise ModelSpecError(source, "energy_convention", f"{convention!r} is not one of {', '.join(ENERGY_CONVENTIONS)}")
    environment = None
    if data.get("environment") is not None:
        try:
            environment = parse_environment(data["environment"], source)
        except EnvironmentSpecError as error:
            raise ModelSpecError(source, "environment", str(error).split(": ", 1)[-1]) from None
    status = str(data.get("status") or "ok")
    if status not in STATUSES:
        raise ModelSpecError(source, "status", f"{status!r} is not one of {', '.join(STATUSES)}")
    if status != "ok" and not str(data.get("known_issues") or "").strip():
        raise ModelSpecError(source, "known_issues", f"required when status is {status!r}")
    aggregation = data.get("message_aggregation")
    if aggregation is not None and (kind != "matgl" or aggregation != "destination"):
        raise ModelSpecError(source, "message_aggregation", f"{aggregation!r}: only `destination`, and only for kind 'matgl'")
    parameters = data.get("parameters")
    if parameters is not None and (not isinstance(parameters, int) or parameters <= 0):
        raise ModelSpecError(source, "parameters", f"{parameters!r} is not a positive integer")
    for key in ("calculator_kwargs", "versions", "defaults"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise ModelSpecError(source, key, "expected a mapping")
    elements = data.get("elements")
    if elements is not None:
        from xtalbench.core.schema import FrameError, atomic_number

        try:
            [atomic_number(e, source) for e in elements]
        except FrameError as error:
            raise ModelSpecError(source, "elements", error.reason) from None
        elements = tuple(elements)
    return ModelSpec(
        name=data["name"],
        kind=kind,
        licence=str(data["licence"]),
        training_set=TrainingSet(
            name=str(ts["name"]),
            database=str(ts["database"]),
            version=None if ts.get("version") is None else str(ts["version"]),
            ids_file=ts.get("ids_file"),
        ),
        energy_kind=energy_kind,
        checkpoint=None if data.get("checkpoint") is None else str(data["checkpoint"]),
        foundation=None if data.get("foundation") is None else str(data["foundation"]),
        family=family,
        calculator=data.get("calculator"),
        calculator_kwargs=dict(data.get("calculator_kwargs") or {}),
        elements=elements,
        versions={str(k): str(v) for k, v in (data.get("versions") or {}).items()},
        defaults=dict(data.get("defaults") or {}),
        description=str(data.get("description") or ""),
        url=data.get("url"),
        functional=functional,
        energy_convention=convention,
        evidence=str(data.get("evidence") or "").strip(),
        hardware=str(data.get("hardware") or "").strip(),
        parameters=parameters,
        environment=environment,
        status=status,
        known_issues=str(data.get("known_issues") or "").strip(),
        message_aggregation=aggregation,
        source=source,
    )


def spec_data(spec: ModelSpec) -> dict[str, Any]:
    """The spec as the mapping `parse_spec` reads (to send a spec to a worker process)."""
    data = dataclasses.asdict(spec)
    data["environment"] = None if spec.environment is None else spec.environment.as_dict()
    data["elements"] = None if spec.elements is None else list(spec.elements)
    data["_source"] = data.pop("source") or "<spec>"
    return {k: v for k, v in data.items() if v is not None or k == "_source"}


def load_spec(name_or_path: str | Path, models_dir: str | Path = MODELS_DIR) -> ModelSpec:
    """`mace-tiny` (→ models/mace-tiny.yaml) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = Path(models_dir) / f"{name_or_path}.yaml"
    if not path.exists():
        available = ", ".join(sorted(p.stem for p in Path(models_dir).glob("*.yaml"))) or "none"
        raise ModelSpecError(str(path), "<file>", f"no such model spec (available in {models_dir}: {available})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ModelSpecError(str(path), "<yaml>", f"not valid YAML: {error}") from None
    spec = parse_spec(data, str(path))
    if spec.name != path.stem:
        raise ModelSpecError(str(path), "name", f"{spec.name!r} differs from the file name {path.stem!r}")
    return spec


def load_all(models_dir: str | Path = MODELS_DIR) -> dict[str, ModelSpec]:
    """Every spec in the registry folder, by name."""
    return {p.stem: load_spec(p, models_dir) for p in sorted(Path(models_dir).glob("*.yaml"))}


def in_worker() -> bool:
    """True inside a model worker process (it loads its model in-process)."""
    import os

    return os.environ.get("XTALBENCH_WORKER") == "1"


def load_model(spec: ModelSpec, device: str = "cpu", dtype: str | None = "float64", checkpoint: str | Path | None = None,
               in_process: bool | None = None, **options: Any):  # fmt: skip
    """A predictor for the spec (a `xtalbench.models.base.Predictor`).

    `checkpoint` overrides the spec's (fold-trained models: one file per strategy and fold). A
    spec with an `environment:` runs in a worker inside that environment (built on first use)
    unless `in_process` (the worker itself, or a caller whose environment has the packages).
    """
    if in_process is None:
        in_process = spec.environment is None or in_worker()
    if not in_process:
        from xtalbench.models.worker import EnvPredictor

        return EnvPredictor(spec, device=device, dtype=dtype, checkpoint=checkpoint, **options)
    if spec.kind in ("mace-file", "mace-trained", "mace-foundation"):
        from xtalbench.models import mace

        dtype = dtype or "float64"
        if spec.kind == "mace-foundation" and checkpoint is None and spec.checkpoint is None:
            return mace.MacePredictor.from_foundation(spec, device=device, dtype=dtype, **options)
        path = Path(checkpoint or spec.checkpoint)  # type: ignore[arg-type]
        return mace.MacePredictor.from_file(path, device=device, dtype=dtype, name=spec.name, **options)
    if spec.kind == "chgnet":
        from xtalbench.models.chgnet import ChgnetPredictor

        return ChgnetPredictor(checkpoint=None if (checkpoint or spec.checkpoint) is None else str(checkpoint or spec.checkpoint),
                               device=device, name=spec.name, **options)  # fmt: skip
    if spec.kind == "ase":
        from xtalbench.models.ase_calculator import AsePredictor

        return AsePredictor(spec.calculator, spec.calculator_kwargs, elements=spec.elements, name=spec.name, device=device, **options)  # type: ignore[arg-type]
    if spec.kind == "sevennet":
        from xtalbench.models.sevennet import SevennetPredictor

        return SevennetPredictor(str(checkpoint or spec.checkpoint), device=device, name=spec.name, **options)
    if spec.kind == "matgl":
        from xtalbench.models.matgl import MatglPredictor

        return MatglPredictor(str(checkpoint or spec.checkpoint), device=device, dtype=dtype, name=spec.name,
                              message_aggregation=spec.message_aggregation, **options)  # fmt: skip
    raise ModelSpecError(spec.source, "kind", f"{spec.kind!r} cannot be loaded")
