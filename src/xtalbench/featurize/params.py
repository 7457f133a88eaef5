"""The `featurize:` section: SOAP (dscribe) and composition vectors per structure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from xtalbench.core.params import (
    PARAMS_FILE,
    PositiveFloat,
    PositiveInt,
    StrictParams,
    parse_section,
)


class SoapParams(StrictParams):
    """`xtalbench.descriptors.soap.SoapFeaturizer` keyword arguments (its defaults)."""

    r_cut: PositiveFloat = 5.0  # Å
    n_max: PositiveInt = 8
    l_max: int = Field(default=6, ge=0)
    sigma: PositiveFloat = 0.5  # Å
    compression: Literal["off", "mu1nu1", "mu2", "crossover"] = "mu1nu1"
    average: Literal["inner", "outer"] = "inner"
    dtype: Literal["float32", "float64"] = "float32"
    n_jobs: PositiveInt = 1
    chunk_size: PositiveInt = 256


class FeaturizeParams(StrictParams):
    soap: SoapParams = SoapParams()
    # composition vectors (descriptors.composition.KINDS); null: none
    composition: Literal["elmd_mod_petti", "elmd_mendeleev", "magpie"] | None = None
    chunk_rows: PositiveInt = 512  # rows per streamed chunk


def load(params: Mapping[str, Any], file: str = PARAMS_FILE) -> FeaturizeParams:
    return parse_section(FeaturizeParams, params, "featurize", file)
