"""The `plan:` section: `xtalbench plan` inputs the data cannot tell before it exists."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from xtalbench.core.params import (
    PARAMS_FILE,
    DatasetName,
    NonNegativeInt,
    StrictParams,
    parse_section,
)


class PlanParams(StrictParams):
    expected_rows: dict[DatasetName, NonNegativeInt] | NonNegativeInt | None = None  # frames per dataset
    dedup_keep_fraction: float | None = Field(default=None, gt=0, le=1)  # share of frames dedup keeps


def load(params: Mapping[str, Any], file: str = PARAMS_FILE) -> PlanParams:
    return parse_section(PlanParams, params, "plan", file)
