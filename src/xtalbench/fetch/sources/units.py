"""Unit and sign conversions of source labels into the frames table's conventions."""

from __future__ import annotations

from typing import Any

import numpy as np

from xtalbench.core.schema import FrameError

STRESS_UNITS = ("eV/A3", "GPa", "kbar_vasp")


def stress_to_ase(values: Any, unit: str, record: str = "?") -> np.ndarray:
    """Stress (3x3 or 6 Voigt) in `unit` → 6 Voigt (xx yy zz yz xz xy) in eV/Å³, ASE sign.

    `kbar_vasp` is VASP's convention: kBar with positive = compressive, so
    σ_ASE = −0.1 GPa/kBar × σ_VASP. A 3x3 tensor is symmetrised first.
    """
    from ase.units import GPa

    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise FrameError(record, "stress", f"not numeric: {error}") from error
    if array.size == 9:
        tensor = array.reshape(3, 3)
        tensor = 0.5 * (tensor + tensor.T)
        voigt = tensor[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    elif array.size == 6:
        voigt = array.reshape(6)
    else:
        raise FrameError(record, "stress", f"expected 3x3 or 6 Voigt values, got {array.size}")
    scale = {"eV/A3": 1.0, "GPa": GPa, "kbar_vasp": -0.1 * GPa}.get(unit)
    if scale is None:
        raise ValueError(f"unknown stress_unit {unit!r}: use one of {', '.join(STRESS_UNITS)}")
    return voigt * scale
