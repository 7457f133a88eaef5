"""matgl potentials (M3GNet, TensorNet, ...) from a local folder (`matgl.load_model(<folder>)`).

Runs in its own environment (matgl 4.1.2 + its torch-geometric/lightning stack), served by
`xtalbench.models.worker`. Batched: the structures of a batch become one PyG `Batch` through
matgl's own `Atoms2Graph` and one `Potential` call (energies, forces, and stresses in GPa that
are converted to ASE's eV/Å³ and sign, exactly as matgl's `PESCalculator(stress_unit="eV/A3")`).

Checkpoints saved before matgl moved message aggregation from each edge's destination to its
source (matgl PR 761; M3GNet's node update and TensorNet's tensor embedding) load without error
in matgl 4.x but mix species wrongly: elemental solids stay right (every message is the same
either way), compounds are off by eV/atom (MgO -2.1 instead of -5.95 eV/atom). Such a model's
YAML declares `message_aggregation: destination` and `adapt_destination_aggregation` makes the
loaded modules sum at the destination again. Checked against the lattice constants printed in
the M3GNet-MP-2021.2.8-PES model card (`tests/test_model_env.py`).
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np

from xtalbench.models.base import ModelLoadError, Predictor, Rows, voigt

AGGREGATIONS = ("destination",)  # `message_aggregation:` values; None: the installed matgl's own
CPU_BATCH = 8


def _m3gnet_node_update_at_destination(self, edge_index, edge_feat, node_feat, rbf, u_per_edge, num_nodes):
    """M3GNetGraphConv.node_update_ of matgl's DGL era: m(v_src, v_dst, e) summed at dst."""
    import torch
    from matgl.layers._graph_convolution import scatter_add

    src, dst = edge_index[0], edge_index[1]
    parts = [node_feat[src], node_feat[dst], edge_feat] + ([u_per_edge] if self.include_state else [])
    messages = self.node_update_func(torch.hstack(parts)) * self.node_weight_func(rbf)
    return scatter_add(messages, dst, dim_size=num_nodes, dim=0)


def _tensornet_message_at_destination(self, x_i, x_j, edge_attr, edge_weight, Iij, Aij, Sij):
    """TensorEmbedding.message such that its sum at the source equals the old sum at the destination.

    matgl 4.x sums m(x_src, x_dst, r) over the edges leaving a node; the old embedding summed it over
    the edges arriving. The edge list is symmetric (i→j with r comes with j→i with -r), so the old sum
    is the new one with the two node slots swapped and r reversed: I and S are even in r, A is odd.
    """
    import torch

    Zij = self.emb2(torch.cat([x_j, x_i], dim=-1))[..., None, None]
    return Zij * Iij, -Zij * Aij, Zij * Sij


def adapt_destination_aggregation(potential: Any) -> int:
    """Patch the loaded modules (this instance only) to aggregate at the destination; the count patched."""
    from matgl.layers._embedding import TensorEmbedding
    from matgl.layers._graph_convolution import M3GNetGraphConv

    patched = 0
    for module in potential.modules():
        if type(module) is M3GNetGraphConv:
            module.node_update_ = types.MethodType(_m3gnet_node_update_at_destination, module)
            patched += 1
        elif type(module) is TensorEmbedding:
            module.message = types.MethodType(_tensornet_message_at_destination, module)
            patched += 1
    return patched


class MatglPredictor(Predictor):
    batched = True
    fixed_dtype = "float32"  # matgl's default float_th

    def __init__(self, checkpoint: str, device: str = "cpu", dtype: str | None = None, name: str = "matgl", progress: bool = True,
                 message_aggregation: str | None = None):  # fmt: skip
        super().__init__(name, device=device, dtype=dtype, progress=progress)
        path = Path(checkpoint)
        if not (path / "model.json").exists():
            raise ModelLoadError(f"model {name!r}: {path} is not a matgl model folder (no model.json): fix `checkpoint:` in its YAML")
        if message_aggregation not in (None, *AGGREGATIONS):
            raise ModelLoadError(f"model {name!r}: message_aggregation {message_aggregation!r} is not one of {AGGREGATIONS}")
        try:
            import matgl
            from ase import units
            from matgl.ext.ase import Atoms2Graph

            self.potential = matgl.load_model(str(path))
            if self.device != "cpu":
                self.potential = self.potential.to(self.device)
        except Exception as error:
            raise ModelLoadError(f"cannot load matgl model {name!r} from {path}: {type(error).__name__}: {error}") from error
        if message_aggregation == "destination" and adapt_destination_aggregation(self.potential) == 0:
            raise ModelLoadError(f"model {name!r}: `message_aggregation: destination` but {path} has no M3GNet graph convolution "
                                 "or TensorNet embedding to adapt (or matgl's warp kernels are active): remove the field or pin matgl")  # fmt: skip
        model = self.potential.model
        self.converter = Atoms2Graph(model.element_types, model.cutoff)
        self._gpa = units.GPa  # Potential stresses are GPa; x GPa → eV/Å³ as PESCalculator(stress_unit="eV/A3")
        from xtalbench.core.schema import atomic_number

        self.supported_numbers = frozenset(atomic_number(e, name) for e in model.element_types)

    def default_batch_size(self) -> int:
        return CPU_BATCH if self.device == "cpu" else 32

    def _predict_batch(self, rows: Rows) -> dict[str, Any]:
        import torch
        from torch_geometric.data import Batch

        from xtalbench.core.schema import to_atoms

        graphs, lattices, sizes = [], [], []
        for row in rows:
            graph, lattice, _ = self.converter.get_graph(to_atoms(row, with_labels=False))
            graphs.append(graph)
            lattices.append(torch.as_tensor(lattice, dtype=torch.float32).reshape(1, 3, 3))
            sizes.append(len(row["numbers"]))
        batch = Batch.from_data_list(graphs)
        energy, forces, stress = self.potential(batch.to(self.device), torch.cat(lattices).to(self.device), None)[:3]
        forces_np = forces.detach().cpu().numpy().astype(np.float64)
        stress_np = stress.detach().cpu().numpy().astype(np.float64).reshape(len(rows), 3, 3) * self._gpa
        return {
            "energy": energy.detach().cpu().numpy().astype(np.float64).reshape(-1),
            "forces": np.split(forces_np, np.cumsum(sizes)[:-1]),
            "stress": voigt(stress_np),
        }
