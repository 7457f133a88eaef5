"""The frames table: conversions, validation and the canonical structure hash."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from xtalbench.core.schema import (
    FRAMES_SCHEMA,
    FrameError,
    frames_table,
    from_atoms,
    from_structure,
    make_frame,
    structure_hash,
    to_atoms,
    to_structure,
    validate_frame,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def mp20_structures():
    from pymatgen.core import Structure

    table = pq.read_table(SHARED / "mp20-subset" / "mp20_subset.parquet", columns=["material_id", "cif"]).slice(0, 40)
    return [(row["material_id"], Structure.from_str(row["cif"], fmt="cif")) for row in table.to_pylist()]


def labelled_nacl():
    atoms = bulk("NaCl", "rocksalt", a=5.64) * (2, 1, 1)
    rng = np.random.default_rng(0)
    forces = rng.normal(size=(len(atoms), 3))
    atoms.calc = SinglePointCalculator(atoms, energy=-27.1, forces=forces, stress=np.arange(6) * 1e-3)
    return atoms


def test_atoms_round_trip_keeps_geometry_and_labels():
    atoms = labelled_nacl()
    frame = from_atoms(atoms, frame_id="f1", material_id="mp-22862", source="test")
    validate_frame(frame)
    assert frame["formula"] == "NaCl" and frame["elements"] == ["Cl", "Na"] and frame["nsites"] == 4
    back = to_atoms(frame)
    assert np.allclose(back.positions, atoms.positions) and np.allclose(back.cell.array, atoms.cell.array)
    assert back.get_potential_energy() == pytest.approx(-27.1)
    assert np.allclose(back.get_forces(), atoms.get_forces())
    assert np.allclose(back.get_stress(), atoms.get_stress())


def test_structure_round_trip_and_table(mp20_structures):
    frames = []
    for material_id, structure in mp20_structures:
        frame = from_structure(structure, frame_id=material_id, material_id=material_id, source="mp20")
        validate_frame(frame)
        back = to_structure(frame)
        assert back.composition == structure.composition
        assert np.allclose(back.frac_coords % 1.0, structure.frac_coords % 1.0, atol=1e-8) or back.matches(structure)
        frames.append(frame)
    table = frames_table(frames)
    assert table.schema == FRAMES_SCHEMA and table.num_rows == len(mp20_structures)


def test_hash_invariant_to_permutation_translation_and_noise(mp20_structures):
    rng = np.random.default_rng(42)
    for _, structure in mp20_structures:
        lattice, numbers = structure.lattice.matrix, [s.specie.Z for s in structure]
        cart = structure.cart_coords
        reference = structure_hash(lattice, numbers, cart)
        order = rng.permutation(len(numbers))
        assert structure_hash(lattice, [numbers[i] for i in order], cart[order]) == reference
        shifted = cart.copy()
        shifted[0] += lattice[rng.integers(3)] * rng.choice([-1, 1])
        assert structure_hash(lattice, numbers, shifted) == reference
        noisy = cart + rng.uniform(-5e-7, 5e-7, size=cart.shape)
        assert structure_hash(lattice, numbers, noisy) == reference


def test_hash_differs_between_crystals(mp20_structures):
    hashes = {structure_hash(s.lattice.matrix, [x.specie.Z for x in s], s.cart_coords) for _, s in mp20_structures}
    assert len(hashes) == len(mp20_structures)
    _, structure = mp20_structures[0]
    moved = structure.cart_coords.copy()
    moved[0] += 0.05  # a real displacement, far above the hash grid
    numbers = [x.specie.Z for x in structure]
    assert structure_hash(structure.lattice.matrix, numbers, moved) != structure_hash(
        structure.lattice.matrix, numbers, structure.cart_coords
    )


def base_frame(**overrides):
    atoms = bulk("Si", "diamond", a=5.43)
    fields = dict(frame_id="bad-1", material_id="mp-149", source="test", lattice=atoms.cell.array,
                  numbers=atoms.numbers, positions=atoms.positions, energy=-10.8, forces=np.zeros((2, 3)))
    fields.update(overrides)
    return make_frame(**fields)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"forces": [[math.nan, 0, 0], [0, 0, 0]]}, "forces"),
        ({"forces": np.zeros((3, 3))}, "forces"),
        ({"energy": math.inf}, "energy"),
        ({"energy": -10.8e3}, "energy"),  # meV passed as eV
        ({"stress": [50.0, 50.0, 50.0, 0, 0, 0]}, "stress"),  # kBar passed as eV/Å³
        ({"numbers": [14, 0]}, "numbers"),
        ({"positions": [[0, 0, 0], [0.1, 0.1, 0.1]]}, "positions"),
        ({"lattice": np.zeros((3, 3))}, "lattice"),
        ({"material_id": ""}, "material_id"),
    ],
)
def test_validation_names_record_and_field(overrides, field):
    frame = base_frame(**overrides)
    with pytest.raises(FrameError) as error:
        validate_frame(frame)
    assert error.value.field == field and error.value.record == "bad-1"
    assert "bad-1" in str(error.value) and field in str(error.value)


def test_close_atoms_across_the_periodic_boundary_are_caught():
    cell = np.eye(3) * 4.0
    frame = make_frame(frame_id="pbc", material_id="x", source="t", lattice=cell, numbers=[8, 8],
                       positions=[[0.1, 0, 0], [3.8, 0, 0]])  # 0.3 Å apart through the boundary
    with pytest.raises(FrameError, match="positions"):
        validate_frame(frame)


def test_disordered_structure_is_refused():
    from pymatgen.core import Lattice, Structure

    disordered = Structure(Lattice.cubic(3.0), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    with pytest.raises(FrameError, match="disordered"):
        from_structure(disordered, frame_id="d", material_id="d", source="t")


def test_closest_pair_agrees_with_ase_neighbour_list():
    from xtalbench.core.schema import _closest_pair_ase, closest_pair

    rng = np.random.default_rng(7)
    for trial in range(60):
        n = int(rng.integers(1, 12))
        cell = np.diag(rng.uniform(1.5, 6.0, 3)) + rng.uniform(-1.5, 1.5, (3, 3)) * (trial % 2)
        cart = rng.uniform(-2, 8, (n, 3))
        pbc = rng.random(3) < 0.8
        fast, slow = closest_pair(cell, cart, pbc, 1.2), _closest_pair_ase(cell, cart, pbc, 1.2)
        assert (fast is None) == (slow is None)
        if fast is not None:
            assert fast[2] == pytest.approx(slow[2], abs=1e-9)
