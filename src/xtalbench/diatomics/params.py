"""`diatomics:` params: which dimer curves, which models, and the metric thresholds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from xtalbench.core.params import PositiveFloat, PositiveInt, StageParams


class DiatomicsParams(StageParams):
    path: str = "../shared/data/diatomics/diatomics-dft.json.gz"  # Matbench Discovery's DFT dimer curves
    functional: Literal["PBE", "r2SCAN"] = "PBE"  # the reference curves
    models: list[str] = []  # models/<name>.yaml
    pairs: list[str] | None = None  # explicit pairs ("O-O"); null: a seeded sample of max_pairs
    max_pairs: PositiveInt | None = 12  # null: every pair of the file (92)
    seed: int = 0
    box: float = Field(default=30.0, ge=20.0)  # Å, cubic cell around the dimer (images > 20 Å apart)
    max_energy: PositiveFloat | None = 5.0  # eV, capped curve RMSE over DFT E_rel <= this
    minima_tolerance: PositiveFloat = 0.01  # eV, prominence below which a local minimum is noise
    device: str = "auto"
    batch_size: PositiveInt | None = None
    threads: PositiveInt | None = None
