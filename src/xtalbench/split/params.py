"""The `split:` section: which strategies run, and each one's knobs.

Defaults are the strategy functions' own (`xtalbench.split.loco`, `random_split`, `labels`,
`forward`, `card`). Fractions are bounded so that no fold can be left without training data:
`test_fraction` in (0, 1), every `val_fraction` (a share of the non-test materials) in [0, 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from xtalbench.core.params import (
    PARAMS_FILE,
    Fraction,
    PositiveFloat,
    PositiveInt,
    Strategy,
    StrictParams,
    parse_section,
)


class LocoParams(StrictParams):
    """Standardise → RBF kernel PCA → KMeans(k); fold i tests cluster i."""

    k: int = Field(default=5, ge=2)  # one cluster would be every material in test
    n_components: PositiveInt = 10
    gamma: PositiveFloat | None = None  # null: 1 / median squared distance
    exact_max_rows: PositiveInt = 5000
    n_landmarks: PositiveInt = 1000
    min_cluster_fraction: Fraction | None = 0.0
    val_fraction: Fraction = 0.1


class RandomParams(StrictParams):
    folds: PositiveInt = 1  # 1: one hold-out split; K > 1: K group folds
    test_fraction: float = Field(default=0.1, gt=0, lt=1)
    val_fraction: Fraction = 0.1


class ElementParams(StrictParams):
    """Leave-one-element-out."""

    elements: list[str] = []
    min_test_materials: PositiveInt = 1
    val_fraction: Fraction = 0.1

    @field_validator("elements")
    @classmethod
    def _symbols(cls, elements: list[str]) -> list[str]:
        from ase.data import atomic_numbers

        unknown = [e for e in elements if e not in atomic_numbers or e == "X"]
        if unknown:
            raise ValueError(f"not chemical element symbols: {unknown}")
        return elements


class SpacegroupParams(StrictParams):
    """Leave-one-crystal-system-out."""

    symprec: PositiveFloat = 0.1
    min_test_materials: PositiveInt = 1
    val_fraction: Fraction = 0.1


class ForwardParams(StrictParams):
    """k-fold forward CV on the first property with enough coverage."""

    properties: list[str] = []
    min_coverage: float = Field(default=0.5, gt=0, le=1)
    k: int = Field(default=5, ge=2)
    val_fraction: Fraction = 0.1


class CardParams(StrictParams):
    in_domain_flag: float = Field(default=0.5, ge=0, le=1)
    max_rows: int | None = Field(default=20000, ge=0)  # 0 / null: no cap


class SplitParams(StrictParams):
    seed: int = 0
    strategies: list[Strategy] | None = None  # null / empty: every strategy
    chunk_rows: PositiveInt = 2048
    loco: LocoParams = LocoParams()
    random: RandomParams = RandomParams()
    element: ElementParams = ElementParams()
    spacegroup: SpacegroupParams = SpacegroupParams()
    forward: ForwardParams = ForwardParams()
    card: CardParams = CardParams()


def load(params: Mapping[str, Any], file: str = PARAMS_FILE) -> SplitParams:
    return parse_section(SplitParams, params, "split", file)
