"""Published figures on the same five sets: MatterSim model card (microsoft/mattersim, v1 1M and 5M).

Energy MAE meV/atom, force MAE eV/Å (per-atom vector norm), stress MAE GPa, on the full sets
(ours: seeded samples unless `sample: null`). Source: ../shared/data/README.md.
"""

from __future__ import annotations

# set → model → (energy meV/atom, force eV/Å vector norm, stress GPa)
MATTERSIM = {
    "mptrj-random-1k": {"MatterSim-v1-1M": (30, 0.149, 0.241), "MatterSim-v1-5M": (24, 0.109, 0.186)},
    "alexandria-random-1k": {"MatterSim-v1-1M": (58, 0.086, 0.761), "MatterSim-v1-5M": (16, 0.042, 0.205)},
    "mpf-TP": {"MatterSim-v1-1M": (29, 0.418, 1.159), "MatterSim-v1-5M": (26, 0.364, 1.144)},
    "mpf-alkali-TP": {"MatterSim-v1-1M": (24, 0.331, 0.845), "MatterSim-v1-5M": (21, 0.293, 0.714)},
    "random-TP": {"MatterSim-v1-1M": (208, 0.933, 2.065), "MatterSim-v1-5M": (199, 0.824, 1.999)},
}
SOURCE = "MatterSim model card (microsoft/mattersim), as quoted in ../shared/data/README.md"


def anchors_for(set_name: str | None) -> dict[str, dict[str, float]]:
    """{model: {energy_mae_meV_per_atom, force_mae_vector_norm_meV_per_A, stress_mae_GPa}} for a set."""
    out = {}
    for model, (energy, force, stress) in MATTERSIM.get(set_name or "", {}).items():
        out[model] = {"energy_mae_meV_per_atom": float(energy), "force_mae_vector_norm_meV_per_A": 1000.0 * force, "stress_mae_GPa": float(stress)}
    return out
