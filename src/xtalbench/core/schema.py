"""The frames table: one row per structure or trajectory frame.

Every stage exchanges this table as Parquet. Units are fixed here and converted once, at
fetch: lengths in Å, energy in eV (total, uncorrected DFT), forces in eV/Å, stress as 6 Voigt
components (xx, yy, zz, yz, xz, xy) in eV/Å³ with the ASE sign convention (positive = tensile).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from xtalbench.core.errors import XtalbenchError

MIN_INTERATOMIC_DISTANCE = 0.5  # Å: closer atoms mean a broken structure
MAX_ABS_ENERGY_PER_ATOM = 100.0  # eV/atom: beyond this the energy is not in eV
MAX_ABS_FORCE = 1000.0  # eV/Å
MAX_ABS_STRESS = 5.0  # eV/Å³ (= 800 GPa): kBar or GPa passed as eV/Å³ land far above this
MAX_ATOMIC_NUMBER = 118
# structure_hash grid: fractional coordinates snap to multiples of 1/1440 (~0.0035 Å on a 5 Å
# cell). 1440 = 2^5·3^2·5, so k/2, k/3, k/4, k/5, k/6, k/8, k/9, k/12, k/16 ... are grid points and
# no coordinate written with <= 5 decimals lies on a rounding boundary.
HASH_FRACTIONAL_GRID = 1440
HASH_LATTICE_DECIMALS = 3  # Å

_f64_list = pa.list_(pa.float64())

FRAMES_SCHEMA = pa.schema(
    [
        pa.field("frame_id", pa.string(), nullable=False),
        pa.field("material_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("formula", pa.string(), nullable=False),
        pa.field("elements", pa.list_(pa.string()), nullable=False),
        pa.field("nsites", pa.int32(), nullable=False),
        pa.field("lattice", _f64_list, nullable=False),
        pa.field("numbers", pa.list_(pa.int32()), nullable=False),
        pa.field("positions", _f64_list, nullable=False),
        pa.field("pbc", pa.list_(pa.bool_()), nullable=False),
        pa.field("energy", pa.float64()),
        pa.field("forces", _f64_list),
        pa.field("stress", _f64_list),
        pa.field("magmoms", _f64_list),
        pa.field("formation_energy_per_atom", pa.float64()),
        pa.field("e_above_hull", pa.float64()),
        pa.field("band_gap", pa.float64()),
        pa.field("spacegroup", pa.int32()),
        pa.field("trajectory_id", pa.string()),
        pa.field("frame_index", pa.int32()),
        pa.field("structure_hash", pa.string(), nullable=False),
        pa.field("meta", pa.string()),
    ]
)
COLUMNS = FRAMES_SCHEMA.names

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("record", pa.string(), nullable=False),
        pa.field("field", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.string()),
    ]
)


class FrameError(XtalbenchError, ValueError):
    """A record that cannot become a valid frame; names the record and the field."""

    def __init__(self, record: str, field: str, reason: str):
        self.record, self.field, self.reason = record, field, reason
        super().__init__(f"record {record!r}, field {field!r}: {reason}")


@dataclass(frozen=True)
class Rejected:
    """A source record that could not be turned into a frame, kept for the quarantine file."""

    record: str
    field: str
    reason: str
    raw: str | None = None

    @classmethod
    def from_error(cls, error: FrameError, raw: Any = None) -> Rejected:
        return cls(error.record, error.field, error.reason, raw_json(raw))

    def as_row(self) -> dict[str, Any]:
        return {"record": self.record, "field": self.field, "reason": self.reason, "raw": self.raw}


def raw_json(raw: Any) -> str | None:
    """A source record as JSON text for the quarantine file (numpy values made plain)."""
    if raw is None or isinstance(raw, str):
        return raw
    return json.dumps(raw, default=_json_default, sort_keys=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def element_symbol(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[z]


def atomic_number(symbol: str, record: str = "?") -> int:
    """Atomic number of an element symbol; unknown symbols raise a FrameError."""
    from ase.data import atomic_numbers

    z = atomic_numbers.get(str(symbol).strip())
    if z is None or z == 0:
        raise FrameError(record, "numbers", f"unknown element {symbol!r}")
    return z


def reduced_formula(numbers: Iterable[int]) -> str:
    from pymatgen.core import Composition

    counts: dict[str, float] = {}
    for z in numbers:
        symbol = element_symbol(int(z))
        counts[symbol] = counts.get(symbol, 0) + 1
    with warnings.catch_warnings():  # pymatgen warns about noble gases lacking electronegativity
        warnings.simplefilter("ignore", UserWarning)
        return Composition(counts).reduced_formula


# --- kernel-independent 3x3 geometry -------------------------------------------------------
# numpy's `@`/`dot`/`linalg.solve` go to OpenBLAS/LAPACK, whose kernel (picked by CPU, or by
# OPENBLAS_CORETYPE) may fuse multiply-adds or reorder sums: the last bit of a position then
# depends on the machine (`xtalbench fetch mp20` wrote different bytes under Haswell and
# SkylakeX). These helpers spell the 3-term sums out as separate elementwise ufuncs in a fixed
# order, each correctly rounded (IEEE 754), so every CPU gives the same bits.


def frac_to_cart(frac: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Cartesian = frac @ cell, as (f0·a + f1·b) + f2·c without BLAS: bit-identical on any CPU."""
    frac = np.asarray(frac, dtype=np.float64).reshape(-1, 3)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    return frac[:, 0:1] * cell[0] + frac[:, 1:2] * cell[1] + frac[:, 2:3] * cell[2]


def det3(cell: np.ndarray) -> float:
    """Determinant of a 3x3 matrix by cofactors along the first row (no LAPACK)."""
    m = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    c = _cofactors(m)
    return float((m[0, 0] * c[0, 0] + m[0, 1] * c[0, 1]) + m[0, 2] * c[0, 2])


def cart_to_frac(cart: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Fractional = cart @ inv(cell) with the cofactor inverse (no LAPACK): bit-identical on any CPU.

    Raises numpy.linalg.LinAlgError for a singular cell, as `np.linalg.solve` does.
    """
    m = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    det = det3(m)
    if det == 0.0 or not math.isfinite(det):
        raise np.linalg.LinAlgError("singular cell")
    inverse = _cofactors(m).T / det  # inv(cell)[i, j] = cofactor[j, i] / det
    return frac_to_cart(cart, inverse)


def _cofactors(m: np.ndarray) -> np.ndarray:
    c = np.empty((3, 3))
    for i in range(3):
        for j in range(3):
            r = [k for k in range(3) if k != i]
            s = [k for k in range(3) if k != j]
            c[i, j] = (-1) ** (i + j) * (m[r[0], s[0]] * m[r[1], s[1]] - m[r[0], s[1]] * m[r[1], s[0]])
    return c


def structure_hash(lattice: Iterable[float], numbers: Iterable[int], positions: Iterable[float]) -> str:
    """Canonical content hash of a periodic structure.

    Invariant to the order of sites and to moving an atom by a lattice vector. Coordinates are
    snapped to a grid (HASH_FRACTIONAL_GRID, lattice to 1e-3 Å), so noise of δ changes the hash
    only when a coordinate lies within δ of a grid boundary: never for high-symmetry positions
    (they are grid points), with probability ~2δ/0.0035 Å per generic coordinate (≈6e-4 for
    δ = 1e-6 Å). A hash cannot be noise-proof everywhere; this puts its boundaries where
    crystal coordinates rarely are.
    """
    cell = np.asarray(lattice, dtype=np.float64).reshape(3, 3)
    z = np.asarray(numbers, dtype=np.int64)
    cart = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    frac = cart_to_frac(cart, cell)
    grid = np.rint(frac * HASH_FRACTIONAL_GRID).astype(np.int64) % HASH_FRACTIONAL_GRID  # wrap: 1.0 and 0.0 are one point
    order = np.lexsort((grid[:, 2], grid[:, 1], grid[:, 0], z))
    sites = np.column_stack([z[order], grid[order]])
    lat = np.rint(cell * 10**HASH_LATTICE_DECIMALS).astype(np.int64) + 0  # +0 turns -0 into 0
    digest = hashlib.sha256()
    digest.update(lat.tobytes())
    digest.update(sites.tobytes())
    return digest.hexdigest()[:32]


def make_frame(
    *,
    frame_id: str,
    material_id: str,
    source: str,
    lattice: Iterable[float],
    numbers: Iterable[int],
    positions: Iterable[float],
    pbc: Iterable[bool] = (True, True, True),
    energy: float | None = None,
    forces: Iterable[float] | None = None,
    stress: Iterable[float] | None = None,
    magmoms: Iterable[float] | None = None,
    formation_energy_per_atom: float | None = None,
    e_above_hull: float | None = None,
    band_gap: float | None = None,
    spacegroup: int | None = None,
    trajectory_id: str | None = None,
    frame_index: int | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build one row of the frames table, deriving formula, elements, nsites and hash.

    Shapes are not checked here: `validate_frame` does that, so a bad record still becomes
    a row that can be quarantined with its reason.
    """
    numbers = [int(z) for z in numbers]
    lattice = _floats(lattice)
    positions = _floats(positions)
    try:
        formula = reduced_formula(numbers)
        elements = sorted({element_symbol(z) for z in numbers})
    except (IndexError, ValueError):
        formula, elements = "", []
    try:
        digest = structure_hash(lattice, numbers, positions)
    except (ValueError, np.linalg.LinAlgError):
        digest = ""
    return {
        "frame_id": str(frame_id),
        "material_id": str(material_id),
        "source": source,
        "formula": formula,
        "elements": elements,
        "nsites": len(numbers),
        "lattice": lattice,
        "numbers": numbers,
        "positions": positions,
        "pbc": [bool(p) for p in pbc],
        "energy": _float_or_none(energy),
        "forces": _floats(forces),
        "stress": _floats(stress),
        "magmoms": _floats(magmoms),
        "formation_energy_per_atom": _float_or_none(formation_energy_per_atom),
        "e_above_hull": _float_or_none(e_above_hull),
        "band_gap": _float_or_none(band_gap),
        "spacegroup": None if spacegroup is None else int(spacegroup),
        "trajectory_id": None if trajectory_id is None else str(trajectory_id),
        "frame_index": None if frame_index is None else int(frame_index),
        "structure_hash": digest,
        "meta": None if not meta else json.dumps(meta, sort_keys=True, default=_json_default),
    }


def _floats(values: Iterable[float] | None) -> list[float] | None:
    if values is None:
        return None
    return [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value


def validate_frame(frame: Mapping[str, Any]) -> None:
    """Raise FrameError (naming the frame and the field) unless the row is physically valid."""
    record = str(frame.get("frame_id") or "?")

    def fail(field: str, reason: str) -> None:
        raise FrameError(record, field, reason)

    for key in ("frame_id", "material_id", "source"):
        if not frame.get(key):
            fail(key, "missing")
    numbers = frame.get("numbers")
    if not numbers:
        fail("numbers", "no atoms")
    n = len(numbers)
    for z in numbers:
        if not 1 <= int(z) <= MAX_ATOMIC_NUMBER:
            fail("numbers", f"unknown element with atomic number {z}")
    _check_array(frame, "lattice", 9, fail)
    _check_array(frame, "positions", 3 * n, fail)
    pbc = frame.get("pbc")
    if pbc is None or len(pbc) != 3:
        fail("pbc", "expected 3 booleans")
    cell = np.asarray(frame["lattice"], dtype=np.float64).reshape(3, 3)
    volume = abs(det3(cell))
    if all(pbc) and volume < 1e-6:
        fail("lattice", f"cell volume {volume:.3g} Å³ is not positive")
    energy = frame.get("energy")
    if energy is not None:
        if not math.isfinite(energy):
            fail("energy", f"not finite ({energy})")
        if abs(energy) / n > MAX_ABS_ENERGY_PER_ATOM:
            fail("energy", f"{energy / n:.4g} eV/atom is implausible: is it in eV?")
    forces = _check_array(frame, "forces", 3 * n, fail, optional=True)
    if forces is not None and np.abs(forces).max(initial=0.0) > MAX_ABS_FORCE:
        fail("forces", f"max |F| {np.abs(forces).max():.4g} eV/Å is implausible: is it in eV/Å?")
    stress = _check_array(frame, "stress", 6, fail, optional=True)
    if stress is not None and np.abs(stress).max(initial=0.0) > MAX_ABS_STRESS:
        fail("stress", f"max |σ| {np.abs(stress).max():.4g} eV/Å³ is implausible: is it kBar or GPa?")
    _check_array(frame, "magmoms", n, fail, optional=True)
    for key in ("formation_energy_per_atom", "e_above_hull", "band_gap"):
        value = frame.get(key)
        if value is not None and not math.isfinite(value):
            fail(key, f"not finite ({value})")
    if not frame.get("structure_hash"):
        fail("structure_hash", "missing")
    _check_distances(frame, fail)


def _check_array(frame: Mapping[str, Any], key: str, size: int, fail, optional: bool = False) -> np.ndarray | None:
    values = frame.get(key)
    if values is None:
        if optional:
            return None
        fail(key, "missing")
    array = np.asarray(values, dtype=np.float64)
    if array.size != size:
        fail(key, f"has {array.size} values, expected {size}")
    if not np.isfinite(array).all():
        fail(key, "contains NaN or infinite values")
    return array


def _check_distances(frame: Mapping[str, Any], fail) -> None:
    cell = np.asarray(frame["lattice"], dtype=np.float64).reshape(3, 3)
    cart = np.asarray(frame["positions"], dtype=np.float64).reshape(-1, 3)
    found = closest_pair(cell, cart, np.asarray(frame["pbc"], dtype=bool), MIN_INTERATOMIC_DISTANCE)
    if found is not None:
        i, j, d = found
        fail("positions", f"atoms {i} and {j} are {d:.3f} Å apart (< {MIN_INTERATOMIC_DISTANCE} Å)")


def closest_pair(cell: np.ndarray, cart: np.ndarray, pbc: np.ndarray, cutoff: float) -> tuple[int, int, float] | None:
    """The closest pair of atoms (periodic images included) nearer than `cutoff`, or None.

    With positions wrapped into the cell, shifts of -1, 0, +1 cell vectors are exact as long as
    every perpendicular cell height is at least `cutoff`; other cells go to ASE's neighbour
    list. This is ~50x faster than ASE for the small cells that make up MP and MPtrj.
    """
    heights = _perpendicular_heights(cell)
    if len(cart) > 300 or (pbc & (heights < cutoff)).any():
        return _closest_pair_ase(cell, cart, pbc, cutoff)
    frac = cart_to_frac(cart, cell)
    frac[:, pbc] %= 1.0
    wrapped = frac_to_cart(frac, cell)
    diff = wrapped[:, None, :] - wrapped[None, :, :]
    shifts = _SHIFTS[(_SHIFTS[:, ~pbc] == 0).all(axis=1)]
    # all image shifts at once: (shifts, n, n) squared distances; the first minimum wins, as in a loop over shifts
    d2 = ((diff[None] + frac_to_cart(shifts, cell)[:, None, None, :]) ** 2).sum(axis=-1)
    zero = int(np.flatnonzero(~shifts.any(axis=1))[0])
    d2[zero][np.diag_indices(len(cart))] = np.inf
    s, i, j = np.unravel_index(int(np.argmin(d2)), d2.shape)
    d = float(np.sqrt(d2[s, i, j]))
    return (int(min(i, j)), int(max(i, j)), d) if d < cutoff else None


_SHIFTS = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)], dtype=np.float64)


def _perpendicular_heights(cell: np.ndarray) -> np.ndarray:
    volume = abs(det3(cell))
    areas = np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    return volume / np.where(areas > 0, areas, np.inf)


def _closest_pair_ase(cell, cart, pbc, cutoff) -> tuple[int, int, float] | None:
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", Atoms(positions=cart, cell=cell, pbc=pbc), cutoff)
    if not len(d):
        return None
    k = int(np.argmin(d))
    return int(min(i[k], j[k])), int(max(i[k], j[k])), float(d[k])


def frames_table(frames: list[Mapping[str, Any]]) -> pa.Table:
    """Rows → Arrow table in FRAMES_SCHEMA column order."""
    return pa.Table.from_pylist([{c: f.get(c) for c in COLUMNS} for f in frames], schema=FRAMES_SCHEMA)


def quarantine_table(rejected: list[Rejected]) -> pa.Table:
    return pa.Table.from_pylist([r.as_row() for r in rejected], schema=QUARANTINE_SCHEMA)


# --- conversions --------------------------------------------------------------------------


def to_atoms(frame: Mapping[str, Any], with_labels: bool = True):
    """Frame row → ase.Atoms; labels ride on a SinglePointCalculator."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    n = len(frame["numbers"])
    atoms = Atoms(
        numbers=list(frame["numbers"]),
        positions=np.asarray(frame["positions"], dtype=np.float64).reshape(n, 3),
        cell=np.asarray(frame["lattice"], dtype=np.float64).reshape(3, 3),
        pbc=list(frame["pbc"]),
    )
    atoms.info["frame_id"] = frame.get("frame_id")
    atoms.info["material_id"] = frame.get("material_id")
    if frame.get("magmoms") is not None:
        atoms.set_initial_magnetic_moments(frame["magmoms"])
    if with_labels:
        results: dict[str, Any] = {}
        if frame.get("energy") is not None:
            results["energy"] = frame["energy"]
        if frame.get("forces") is not None:
            results["forces"] = np.asarray(frame["forces"], dtype=np.float64).reshape(n, 3)
        if frame.get("stress") is not None:
            results["stress"] = np.asarray(frame["stress"], dtype=np.float64)
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def from_atoms(atoms, *, frame_id: str, material_id: str, source: str, **extra: Any) -> dict[str, Any]:
    """ase.Atoms (with an optional calculator holding labels) → frame row."""
    labels: dict[str, Any] = {}
    calc = atoms.calc
    if calc is not None:
        for key in ("energy", "forces", "stress"):
            value = calc.results.get(key)
            if value is not None:
                if key == "stress" and np.size(value) == 9:
                    from ase.stress import full_3x3_to_voigt_6_stress

                    value = full_3x3_to_voigt_6_stress(np.asarray(value).reshape(3, 3))
                labels[key] = value
    if atoms.has("initial_magmoms"):
        labels["magmoms"] = atoms.get_initial_magnetic_moments()
    labels.update(extra)
    return make_frame(
        frame_id=frame_id,
        material_id=material_id,
        source=source,
        lattice=atoms.cell.array,
        numbers=atoms.numbers,
        positions=atoms.positions,
        pbc=atoms.pbc,
        **labels,
    )


def to_structure(frame: Mapping[str, Any]):
    """Frame row → pymatgen Structure (labels in `properties`)."""
    from pymatgen.core import Lattice, Structure

    n = len(frame["numbers"])
    site_properties = {}
    if frame.get("forces") is not None:
        site_properties["forces"] = np.asarray(frame["forces"]).reshape(n, 3).tolist()
    if frame.get("magmoms") is not None:
        site_properties["magmom"] = list(frame["magmoms"])
    cell = np.asarray(frame["lattice"], dtype=np.float64).reshape(3, 3)
    structure = Structure(
        Lattice(cell, pbc=tuple(frame["pbc"])),
        [element_symbol(z) for z in frame["numbers"]],
        # fractional coordinates without BLAS (pymatgen's own conversion is a matmul)
        cart_to_frac(np.asarray(frame["positions"], dtype=np.float64).reshape(n, 3), cell),
        coords_are_cartesian=False,
        site_properties=site_properties or None,
    )
    for key in ("frame_id", "material_id", "energy", "stress"):
        if frame.get(key) is not None:
            structure.properties[key] = frame[key]
    return structure


def from_structure(structure, *, frame_id: str, material_id: str, source: str, **labels: Any) -> dict[str, Any]:
    """pymatgen Structure → frame row. Disordered sites cannot be one frame and raise."""
    if not structure.is_ordered:
        raise FrameError(frame_id, "numbers", "structure has partially occupied (disordered) sites")
    return make_frame(
        frame_id=frame_id,
        material_id=material_id,
        source=source,
        lattice=structure.lattice.matrix,
        numbers=[site.specie.Z for site in structure],
        positions=frac_to_cart(structure.frac_coords, structure.lattice.matrix),  # not cart_coords: BLAS
        pbc=structure.lattice.pbc,
        **labels,
    )
