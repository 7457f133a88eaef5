"""params.yaml `finetune`: which folds, the backbone, the heads, conformal and the card's gates."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from xtalbench.core.params import StageParams


class HeadParams(StageParams):
    hidden: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    max_epochs: int = Field(300, ge=1)
    patience: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)


class ConformalParams(StageParams):
    coverage: float = Field(0.9, gt=0, lt=1)
    min_cluster_size: int = Field(30, ge=0)  # calibration points a cluster needs for its own interval; 0: global only


class LearningCurveParams(StageParams):
    strategy: str = "random"
    fold: int = Field(0, ge=0)
    sizes: list[int] = Field(default_factory=lambda: [25, 100, 500, 2000])
    members: int = Field(1, ge=1)
    target_mae_meV_per_atom: float = Field(50.0, gt=0)

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, value: list[int]) -> list[int]:
        if len(value) < 2 or any(v < 2 for v in value) or sorted(set(value)) != value:
            raise ValueError("needs at least two increasing training sizes, each >= 2")
        return value


class GovernanceParams(StageParams):
    """The card's checks, applied to each fine-tuned fold's test role."""

    spearman_rho_min: float = 0.5
    coverage_min: float = Field(0.9, ge=0, le=1)
    false_kill_rate_max: float = Field(0.02, ge=0, le=1)
    keep_precision_min: float = Field(0.85, ge=0, le=1)


class TrainerParams(StageParams):
    """The chgnet-trainer method (frame datasets: energies, forces, stresses)."""

    strategies: dict[str, list[int] | Literal["all"]] = Field(default_factory=lambda: {"random": [0], "loco": [0]})
    members: int | None = Field(2, ge=1)  # None: finetune.members
    epochs: int = Field(2, ge=1)
    lr: float = Field(1e-3, gt=0)
    trainable: list[str] = Field(default_factory=lambda: ["mlp"])  # CHGNet module names that learn
    batch_size: int = Field(4, ge=1)
    max_train_frames: int | None = Field(30, ge=2)
    max_eval_frames: int | None = Field(30, ge=2)   # per stopping / calibration / test role


class FinetuneParams(StageParams):
    datasets: dict[str, Literal["readout-head", "chgnet-trainer"]] = Field(default_factory=lambda: {"mp20": "readout-head"})
    model: str = "chgnet"                   # backbone: models/<name>.yaml
    strategies: dict[str, list[int] | Literal["all"]] = Field(default_factory=lambda: {"random": [0], "loco": "all"})
    members: int = Field(3, ge=1)
    seed: int = 0
    max_train_materials: int | None = Field(None, ge=2)
    head: HeadParams = HeadParams()
    conformal: ConformalParams = ConformalParams()
    stability_threshold: float = 0.0        # eV/atom, stable ⇔ E_hull ≤ threshold
    learning_curve: LearningCurveParams = LearningCurveParams()
    novelty_bins: int = Field(5, ge=1)
    n_bootstrap: int = Field(1000, ge=10)
    scratch_model: str | None = "mace-tiny"  # the no-pretraining baseline read from metrics/<d>/<name>.json
    competing_phases: str | None = "../shared/data/mp-compositions/mp-formation.csv.gz"  # null: shift formula
    hull_scheme_policy: Literal["correct", "refuse"] = "correct"
    mp_references: str = "../shared/data/mp-references/2023-02-07-mp-elemental-reference-entries.json.gz"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(8, ge=1)        # backbone pass
    threads: int | None = Field(1, ge=1)    # torch threads (heads are tiny; 1 keeps results bit-stable)
    trainer: TrainerParams = TrainerParams()
    governance: GovernanceParams = GovernanceParams()
