"""matgl potentials (M3GNet, TensorNet, ...) from a local folder (`matgl.load_model(<folder>)`).

Runs in its own environment (matgl 4.1.2 + its torch-geometric/lightning stack), served by
`xtalbench.models.worker`. Per structure through matgl's own ASE `PESCalculator` with
`stress_unit="eV/A3"` (its default is GPa), the reference path of the matgl authors.
"""

from __future__ import annotations

from pathlib import Path

from xtalbench.models.base import AseCalculatorPredictor, ModelLoadError


class MatglPredictor(AseCalculatorPredictor):
    fixed_dtype = "float32"  # matgl's default float_th

    def __init__(self, checkpoint: str, device: str = "cpu", dtype: str | None = None, name: str = "matgl", progress: bool = True):
        super().__init__(name, device=device, dtype=dtype, progress=progress)
        path = Path(checkpoint)
        if not (path / "model.json").exists():
            raise ModelLoadError(f"model {name!r}: {path} is not a matgl model folder (no model.json): fix `checkpoint:` in its YAML")
        try:
            import matgl
            from matgl.ext.ase import PESCalculator

            self.potential = matgl.load_model(str(path))
            if self.device != "cpu":
                self.potential = self.potential.to(self.device)
            self.calculator = PESCalculator(self.potential, stress_unit="eV/A3")
        except Exception as error:
            raise ModelLoadError(f"cannot load matgl model {name!r} from {path}: {type(error).__name__}: {error}") from error
        from xtalbench.core.schema import atomic_number

        self.supported_numbers = frozenset(atomic_number(e, name) for e in self.calculator.element_types)
