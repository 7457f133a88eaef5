"""The `report:` section: what summaries and cards put side by side (ID vs OOD)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from xtalbench.core.params import PARAMS_FILE, StrictParams, parse_section


class ReportParams(StrictParams):
    """Null or empty values mean `xtalbench.report.stage.ReportConfig`'s defaults."""

    headline_metrics: list[str] | None = None
    in_distribution_strategies: list[str] | None = None  # their test role is in distribution
    models_dir: str | None = Field(default=None, min_length=1)
    reports_dir: str | None = Field(default=None, min_length=1)


def load(params: Mapping[str, Any], file: str = PARAMS_FILE) -> ReportParams:
    return parse_section(ReportParams, params, "report", file)
