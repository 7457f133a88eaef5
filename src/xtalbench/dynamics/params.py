"""The `dynamics:` section of params.yaml (phonons, md, anharmonicity)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from xtalbench.core.params import StageParams

ALL_MATERIALS = ("Al2O3", "CaTiO3", "Cr", "MgB2", "MgO", "NaCl", "Si", "SnO2", "TiO2-anatase")


class PhononParams(StageParams):
    """Phonons of each model on each reference's own displacement set."""

    materials: list[str] = Field(default_factory=lambda: list(ALL_MATERIALS), min_length=1)
    band_npoints: int = Field(31, ge=2, le=1001)  # q-points on the longest seekpath segment (others: same spacing)
    mesh: float | list[int] = 20.0  # phonopy mesh: a length (Å) or three mesh numbers; the same for DFT and model
    dos_pitch_thz: float = Field(0.1, gt=0)
    nac: bool = True  # non-analytic correction with the reference's BORN file where present
    subtract_residual_forces: bool = True  # subtract the model's forces on the undisplaced supercell
    imaginary_tol_thz: float = Field(0.1, ge=0)  # a mode is imaginary when its frequency < -tol


class MdParams(StageParams):
    """Langevin MD on the reference's phonopy supercell (so Φ_DFT applies to every frame)."""

    materials: list[str] = Field(default_factory=lambda: ["MgO"], min_length=1)
    temperature_K: float = Field(600.0, gt=0)
    steps: int = Field(100, ge=2)
    timestep_fs: float = Field(2.0, gt=0)
    friction_per_fs: float = Field(0.01, gt=0)  # Langevin friction (1/fs)
    supercell: list[int] | None = Field(None, min_length=3, max_length=3)  # × unit cell; null: the reference's
    seed: int = 0
    interval: int = Field(1, ge=1)  # record every n-th step
    min_distance: float = Field(0.6, gt=0)  # Å: closer atoms are a failure
    max_energy_change_eV_per_atom: float = Field(1.0, gt=0)  # |E_pot - E_pot(0)| per atom above this: blow-up
    max_displacement_fraction: float = Field(0.5, gt=0, le=0.5)  # of the shortest cell height: lost periodicity
    burn_in_fraction: float = Field(0.5, ge=0, lt=1)  # frames left out of the equilibration check and σ averages
    temperature_tolerance: float = Field(0.15, gt=0)  # equilibrated: |<T> - T0| <= tol·T0 after burn-in
    energy_trend_tolerance_kT: float = Field(0.5, gt=0)  # and |dE_pot/dt|·t_window per atom <= tol·k_B·T0

    @field_validator("supercell")
    @classmethod
    def _positive(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(v < 1 for v in value):
            raise ValueError("supercell multiples must be >= 1")
        return value


class AnharmonicityParams(StageParams):
    """Stability classes of σ⁽²⁾ (Knoop et al.): < weak → weakly anharmonic, ≤ strong → strongly, above → unstable."""

    weak: float = Field(0.5, gt=0)
    strong: float = Field(1.0, gt=0)


class MapParams(StageParams):
    """SOAP kernel-PCA configuration maps of the MD trajectories of one material (≥ 2 models)."""

    enabled: bool = True
    kernel: Literal["average", "rematch"] = "average"
    r_cut: float = Field(5.0, gt=0)
    n_max: int = Field(6, ge=1, le=12)
    l_max: int = Field(4, ge=0, le=10)
    support_quantile: float = Field(0.95, gt=0, le=1)


class DynamicsParams(StageParams):
    models: list[str] = Field(default_factory=lambda: ["chgnet"], min_length=1)
    data: str = "../shared/data/phonopy-examples"
    device: str = "auto"
    batch_size: int | None = Field(None, ge=1)  # null: the model's default
    threads: int | None = Field(None, ge=1)  # torch threads (null: leave as is)
    # Level of theory of each model's training labels when its YAML does not say (training-set name → functional).
    training_set_functional: dict[str, str] = Field(
        default_factory=lambda: {"MPtrj": "PBE", "MatPES-PBE": "PBE", "MatPES-r2SCAN": "r2SCAN", "MPF": "PBE", "OMat24": "PBE"}
    )
    phonons: PhononParams = PhononParams()
    md: MdParams = MdParams()
    anharmonicity: AnharmonicityParams = AnharmonicityParams()
    maps: MapParams = MapParams()
    metrics_dir: str = "metrics/dynamics"
    plots_dir: str = "plots/dynamics"
    out_dir: str = "datasets/dynamics"  # trajectories and force constants (DVC-cached)
