"""The `evaluate:` section: which models predict which datasets, and how they are scored.

Defaults are those of `xtalbench.evaluate.scoring.ScoringConfig` and the evaluate CLI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from xtalbench.core.params import (
    DEVICE_PATTERN,
    PARAMS_FILE,
    DatasetName,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    Strategy,
    StrictParams,
    check_known_datasets,
    parse_section,
)

MP_REFERENCES = "../shared/data/mp-references/2023-02-07-mp-elemental-reference-entries.json.gz"  # thermo.MP_REFERENCES
MP_FORMATION = "../shared/data/mp-compositions/mp-formation.csv.gz"  # hull.MP_FORMATION


class EvaluateParams(StrictParams):
    datasets: list[DatasetName] = []
    models: list[str] = []  # zero-shot models (models/<name>.yaml)
    trained_models: list[str] = []  # fold-trained models (train.folds)
    device: str = Field(default="auto", pattern=DEVICE_PATTERN)
    dtype: Literal["float32", "float64"] | None = None  # null: the model's default
    batch_size: PositiveInt | None = None  # null: the model's default
    threads: PositiveInt | None = None  # torch threads per predicting process (null: this process's)
    stability_threshold: float = 0.0  # eV/atom: stable <=> E_hull <= threshold
    stability_tolerance: NonNegativeFloat = 1e-9  # eV/atom: stable <=> E <= threshold + tolerance
    competing_phases: str | None = Field(default=MP_FORMATION, min_length=1)  # null: shift formula only
    hull_scheme_policy: Literal["correct", "refuse"] = "correct"
    hull_max_disagreement: NonNegativeFloat = 0.05
    n_bootstrap: NonNegativeInt = 1000
    seed: int = 0
    gap_strategies: list[Strategy] | None = Field(default=None, min_length=2, max_length=2)  # [numerator, denominator]; null: loco, random
    mp_references: str = Field(default=MP_REFERENCES, min_length=1)
    force_cosine_min_norm: NonNegativeFloat = 0.001  # eV/Å
    plot_max_points: PositiveInt = 10_000


def load(params: Mapping[str, Any], file: str = PARAMS_FILE) -> EvaluateParams:
    section = parse_section(EvaluateParams, params, "evaluate", file)
    check_known_datasets(section.datasets, params, "evaluate.datasets", file)
    return section
