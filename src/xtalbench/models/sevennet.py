"""SevenNet (sevenn 0.13.0; SevenNet-0's weights ship in the wheel, so it loads offline).

Runs in its own environment (sevenn needs e3nn>=0.5, mace-torch pins e3nn==0.4.4): the YAML's
`environment:` block, served by `xtalbench.models.worker`. Batched: structures become sevenn
`AtomGraphData` graphs, collated by torch_geometric into one graph per batch, one forward pass
(as `sevenn inference` does); the per-structure `SevenNetCalculator` is the reference it is
tested against.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xtalbench.models.base import ModelLoadError, Predictor, Rows


class SevennetPredictor(Predictor):
    batched = True
    fixed_dtype = "float32"  # SevenNet checkpoints compute in float32
    default_batch = 16

    def __init__(self, checkpoint: str = "7net-0", device: str = "cpu", name: str = "sevennet", progress: bool = True,
                 dtype: str | None = None, modal: str | None = None):  # fmt: skip
        super().__init__(name, device=device, dtype=dtype, progress=progress)
        try:
            from sevenn.calculator import SevenNetCalculator

            self.calculator = SevenNetCalculator(model=checkpoint, device=self.device, modal=modal)
        except Exception as error:
            raise ModelLoadError(f"cannot load SevenNet model {name!r} ({checkpoint}): {type(error).__name__}: {error}") from error
        self.model = self.calculator.model
        self.model.set_is_batch_data(True)  # the calculator sets False: one graph at a time
        self.cutoff = float(self.calculator.cutoff)
        self.modal = self.calculator.modal
        self.supported_numbers = frozenset(int(z) for z in self.calculator.type_map)

    def _graph(self, row):
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph

        from xtalbench.core.schema import to_atoms

        data = AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(to_atoms(row, with_labels=False), self.cutoff, with_shift=False))
        if self.modal:
            import sevenn._keys as KEY

            data[KEY.DATA_MODALITY] = self.modal
        return data

    def _predict_batch(self, rows: Rows) -> dict[str, Any]:
        import sevenn._keys as KEY
        from torch_geometric.data import Batch

        batch = Batch.from_data_list([self._graph(r) for r in rows]).to(self.device)
        out = self.model(batch)
        energy = out[KEY.PRED_TOTAL_ENERGY].detach().cpu().numpy().astype(np.float64).reshape(-1)
        f = out[KEY.PRED_FORCE].detach().cpu().numpy().astype(np.float64)
        ptr = batch.ptr.cpu().numpy()
        # sevenn's stress: (b, 6) in xx yy zz xy yz zx, positive = tensile virial; ASE Voigt = -s[[0,1,2,4,5,3]]
        s = -out[KEY.PRED_STRESS].detach().cpu().numpy().astype(np.float64).reshape(-1, 6)[:, [0, 1, 2, 4, 5, 3]]
        return {"energy": energy, "forces": [f[ptr[i] : ptr[i + 1]] for i in range(len(rows))], "stress": s}
