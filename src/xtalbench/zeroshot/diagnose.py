"""How much of a model's energy error is a per-element reference offset (a convention, not physics)?

Fits signed errors e_i (eV/atom) as Σ_el x_i,el · c_el, x the composition fractions (so a
constant offset is included), by least squares, and reports the **leave-one-out** MAE of what is
left (r_i / (1 − h_ii), h the hat matrix): honest even with many elements and few frames
(frames whose leverage h_ii > `max_leverage` are left out, counted). A large raw MAE that
collapses here says the model's and the labels' elemental reference energies differ
(POTCARs, corrections, fitted atom references), not that the model is wrong about bonding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def composition_matrix(numbers: Sequence[Sequence[int]]) -> tuple[np.ndarray, list[int]]:
    """(frames × elements) fractions, element columns in ascending Z."""
    elements = sorted({int(z) for row in numbers for z in row})
    col = {z: j for j, z in enumerate(elements)}
    x = np.zeros((len(numbers), len(elements)))
    for i, row in enumerate(numbers):
        for z in row:
            x[i, col[int(z)]] += 1.0 / len(row)
    return x, elements


def elemental_offsets(signed_errors: Sequence[float], numbers: Sequence[Sequence[int]], max_leverage: float = 0.95, top: int = 5) -> dict[str, Any]:
    """Constant and per-element offsets of the signed energy errors (eV/atom in, meV/atom out)."""
    from xtalbench.core.schema import element_symbol

    y = np.asarray(signed_errors, dtype=np.float64)
    keep = np.isfinite(y)
    y = y[keep]
    rows = [numbers[i] for i in np.flatnonzero(keep)]
    if len(y) < 3:
        return {"frames": int(len(y)), "note": "fewer than 3 frames with an energy error"}
    x, elements = composition_matrix(rows)
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    pinv = np.linalg.pinv(x.T @ x)
    leverage = np.einsum("ij,jk,ik->i", x, pinv, x)
    ok = leverage <= max_leverage
    residual = y - x @ beta
    loo = residual[ok] / (1.0 - leverage[ok])
    order = np.argsort(-np.abs(beta), kind="stable")[:top]
    return {
        "frames": int(len(y)),
        "elements": len(elements),
        "mae_meV_per_atom": float(1000 * np.mean(np.abs(y))),
        "median_signed_error_meV_per_atom": float(1000 * np.median(y)),
        "mae_after_constant_offset_meV_per_atom": float(1000 * np.mean(np.abs(y - np.median(y)))),
        "loo_mae_after_elemental_offsets_meV_per_atom": float(1000 * np.mean(np.abs(loo))) if len(loo) else None,
        "frames_left_out_high_leverage": int((~ok).sum()),
        "largest_offsets_meV_per_atom": {element_symbol(elements[j]): float(1000 * beta[j]) for j in order},
    }
