"""`zeroshot:` params: which pretrained models score which MatterSim sets, and what counts as seen."""

from __future__ import annotations

from typing import Literal

from xtalbench.core.params import DatasetName, PositiveInt, StageParams, StrictParams


class TrainedModel(StrictParams):
    """A pipeline-trained model scored on the same sets (stage `zeroshot-trained`), where its elements cover a frame."""

    model: str  # models/<name>.yaml; its checkpoint is one of `train <dataset>`'s outputs
    dataset: DatasetName  # the dataset whose `train` stage wrote it (models/trained/<dataset>: a DVC dependency)


class ZeroshotParams(StageParams):
    datasets: list[DatasetName] = []  # keys of `datasets` with a `level_of_theory`
    models: list[str] = []  # models/<name>.yaml: every frame of each dataset predicted once
    trained: TrainedModel | None = None  # a pipeline-trained model beside them (frames outside its elements skipped)
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
