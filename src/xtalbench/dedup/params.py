"""The `dedup:` section (MD-HIT greedy filter), with per-dataset `overrides`.

`metric` and `threshold` are required (the stage has no defaults for them); both take one value
for every level (stored as the mapping) or a `{composition, structure}` mapping. An override is merged into the section
one level deep (as `xtalbench.dedup.stage.dataset_config` does) and the result validated
like the section itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from xtalbench.core.params import (
    PARAMS_FILE,
    DatasetName,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    StrictParams,
    check_known_datasets,
    parse_section,
    parse_value,
)

LEVELS = ("composition", "structure")  # xtalbench.dedup.stage.LEVELS
COMPOSITION_METRICS = ("elmd_mod_petti", "elmd_mendeleev", "magpie")  # descriptors.composition.KINDS
STRUCTURE_METRICS = ("xrd", "soap")


class MetricParams(StrictParams):
    composition: Literal["elmd_mod_petti", "elmd_mendeleev", "magpie"] | None = None
    structure: Literal["xrd", "soap"] | None = None


class ThresholdParams(StrictParams):
    composition: NonNegativeFloat | None = None
    structure: NonNegativeFloat | None = None


class XrdParams(StrictParams):
    """`xtalbench.descriptors.xrd.XrdFeaturizer` (its defaults)."""

    two_theta_min: NonNegativeFloat = 0.0
    two_theta_max: float = Field(default=90.0, gt=0, le=180)
    n_points: int = Field(default=901, ge=2)
    sigma: PositiveFloat = 0.3
    wavelength: str = "CuKa"

    @model_validator(mode="after")
    def _range(self) -> XrdParams:
        if self.two_theta_max <= self.two_theta_min:
            raise ValueError(f"two_theta_max ({self.two_theta_max}) must be > two_theta_min ({self.two_theta_min})")
        return self


class DedupSoapParams(StrictParams):
    """`xtalbench.descriptors.soap.SoapFeaturizer` (its defaults; dedup always uses float64)."""

    r_cut: PositiveFloat = 5.0
    n_max: PositiveInt = 8
    l_max: int = Field(default=6, ge=0)
    sigma: PositiveFloat = 0.5
    compression: Literal["off", "mu1nu1", "mu2", "crossover"] = "mu1nu1"
    average: Literal["inner", "outer"] = "inner"
    n_jobs: PositiveInt = 1
    chunk_size: PositiveInt = 256


class SweepParams(StrictParams):
    """`xtalbench dedup --sweep`: thresholds per level."""

    composition: list[NonNegativeFloat] = []
    structure: list[NonNegativeFloat] = []


class DedupConfig(StrictParams):
    """What the stage runs with for one dataset."""

    level: Literal["composition", "structure", "both"] = "both"
    order: Literal["nsites", "reduced_natoms", "material_id", "input"] = "nsites"
    metric: MetricParams  # one name (both levels) or {composition, structure}
    threshold: ThresholdParams  # one distance (both levels) or {composition, structure}
    epsilon: NonNegativeFloat = 1e-9  # dropped iff distance <= threshold + epsilon (dedup.stage.DEFAULT_EPSILON)
    thin_trajectories: bool = False
    thin_tolerance: NonNegativeFloat = 0.01  # Å
    xrd: XrdParams | None = None
    soap: DedupSoapParams | None = None
    sweep: SweepParams | None = None

    @field_validator("metric", "threshold", mode="before")
    @classmethod
    def _one_for_every_level(cls, value: Any) -> Any:
        """A single value applies to every level (as `dedup.stage._per_level` reads it)."""
        return value if isinstance(value, Mapping) or value is None else {level: value for level in LEVELS}

    @property
    def levels(self) -> list[str]:
        return list(LEVELS) if self.level == "both" else [self.level]

    @model_validator(mode="after")
    def _per_level(self) -> DedupConfig:
        for level in self.levels:
            allowed = COMPOSITION_METRICS if level == "composition" else STRUCTURE_METRICS
            if getattr(self.metric, level) is None:
                raise ValueError(f"metric.{level} is required with level {self.level!r} (one of {', '.join(allowed)})")
            if getattr(self.threshold, level) is None:
                raise ValueError(f"threshold.{level} is required with level {self.level!r} (a distance >= 0)")
        return self


class DedupParams(DedupConfig):
    """The whole section: the settings plus `overrides.<dataset>` (partial settings)."""

    overrides: dict[DatasetName, dict[str, Any]] = {}

    def for_dataset(self, dataset: str, file: str = PARAMS_FILE) -> DedupConfig:
        """The settings of `dataset`: the section with its override merged in one level deep."""
        merged = self.model_dump(exclude={"overrides"}, exclude_unset=True)
        for key, value in (self.overrides.get(dataset) or {}).items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        return parse_value(DedupConfig, merged, f"dedup.overrides.{dataset}" if dataset in self.overrides else "dedup", file)


def load(params: Mapping[str, Any], file: str = PARAMS_FILE) -> DedupParams:
    """The `dedup` section; every override validated, naming datasets that are configured."""
    section = parse_section(DedupParams, params, "dedup", file)
    check_known_datasets(list(section.overrides), params, "dedup.overrides", file)
    for dataset in section.overrides:
        section.for_dataset(dataset, file)
    return section
