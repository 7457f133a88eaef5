"""`zeroshot:` params: which pretrained models score which MatterSim sets, and what counts as seen."""

from __future__ import annotations

from typing import Literal

from xtalbench.core.params import DatasetName, PositiveInt, StageParams


class ZeroshotParams(StageParams):
    datasets: list[DatasetName] = []  # keys of `datasets` with a `level_of_theory`
    models: list[str] = []  # models/<name>.yaml: every frame of each dataset predicted once
    # training-set name keyword (case-insensitive, in models/<m>.yaml training_set.name) → the dataset inside it
    seen_sets: dict[str, DatasetName] = {}
    reference_set: DatasetName | None = None  # the denominator for models none of whose training sets has a seen set
    device: str = "auto"  # auto | cpu | cuda
    batch_size: PositiveInt | None = None  # null: the model's default
    threads: PositiveInt | None = None  # torch threads (null: this process's)
    n_bootstrap: PositiveInt = 1000  # material bootstrap of every CI
    seed: int = 0
    ci: float = 0.95
    mp_references: str = "../shared/data/mp-references/2023-02-07-mp-elemental-reference-entries.json.gz"
    hubbard_policy: Literal["separate", "refuse"] = "separate"  # PBE-only models on PBE+U labels
