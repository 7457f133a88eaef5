"""The `train:` section: which split folds get a pipeline-trained MACE model, and how."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from xtalbench.core.params import (
    DEVICE_PATTERN,
    PARAMS_FILE,
    DatasetName,
    NonNegativeInt,
    PositiveInt,
    Strategy,
    StrictParams,
    check_known_datasets,
    parse_section,
)


class FoldRef(StrictParams):
    """One model: trained on the fold's train role, validated on its val role."""

    strategy: Strategy
    fold: NonNegativeInt


class TrainParams(StrictParams):
    datasets: list[DatasetName] = []  # datasets that get pipeline-trained models (dvc.yaml foreach)
    model: str = Field(default="mace-tiny", min_length=1)  # models/<model>.yaml, kind mace-trained
    folds: list[FoldRef] = []
    device: str = Field(default="auto", pattern=DEVICE_PATTERN)
    seed: int = 0
    threads: PositiveInt | None = None  # OMP threads of mace_run_train (null: torch's default)
    max_train_frames: PositiveInt | None = None  # seeded cap per model (null: all)
    max_val_frames: PositiveInt | None = None
    # mace_run_train options (--key value); defaults in xtalbench.train.stage.DEFAULT_HYPER
    hyper: dict[str, str | int | float | bool | None] = {}


def load(params: Mapping[str, Any], file: str = PARAMS_FILE) -> TrainParams:
    section = parse_section(TrainParams, params, "train", file)
    check_known_datasets(section.datasets, params, "train.datasets", file)
    return section
