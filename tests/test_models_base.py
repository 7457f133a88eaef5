"""The Predictor base class: batching, element checks, declared properties, shape checks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from xtalbench.core.errors import XtalbenchError
from xtalbench.models import (
    ModelLoadError,
    PredictionError,
    Predictor,
    UnsupportedElementError,
)


class Toy(Predictor):
    """E = sum of Z (eV), F_i = (Z_i, 0, 0), stress = (1..6): numbers derivable by hand."""

    batched = True
    default_batch = 3

    def __init__(self, properties=("energy", "forces", "stress"), broken: bool = False, **kwargs):
        self.implemented_properties = tuple(properties)
        super().__init__("toy", supported_numbers=frozenset({1, 8}), **kwargs)
        self.calls: list[int] = []
        self.broken = broken

    def _predict_batch(self, rows):
        self.calls.append(len(rows))
        energy = [float(sum(r["numbers"])) for r in rows]
        if self.broken:
            energy = energy[:-1]
        forces = [np.array([[z, 0.0, 0.0] for z in r["numbers"]]) for r in rows]
        return {"energy": energy, "forces": forces, "stress": np.tile(np.arange(1.0, 7.0), (len(rows), 1))}


def frames(n: int, pbc=(True, True, True)) -> list[dict]:
    out = []
    for i in range(n):
        numbers = [8] + [1] * (1 + i % 2)  # OH, OH2, OH, ...
        out.append({"frame_id": f"f{i}", "numbers": numbers, "positions": [0.0] * 3 * len(numbers),
                    "lattice": [10.0, 0, 0, 0, 10.0, 0, 0, 0, 10.0], "pbc": list(pbc)})  # fmt: skip
    return out


def test_batches_are_cut_by_batch_size_and_results_come_back_in_order():
    toy = Toy(progress=False)
    out = toy.predict(frames(7), batch_size=3)
    assert toy.calls == [3, 3, 1]
    np.testing.assert_array_equal(out["energy"], [9, 10, 9, 10, 9, 10, 9])  # O + 1 or 2 H
    assert [f.shape for f in out["forces"][:2]] == [(2, 3), (3, 3)] and out["forces"][1][0, 0] == 8
    np.testing.assert_array_equal(out["stress"][6], [1, 2, 3, 4, 5, 6])
    toy.calls.clear()
    toy.predict(frames(7))  # default batch size of the backend
    assert toy.calls == [3, 3, 1]
    table = toy.predict(pa.Table.from_pylist(frames(2)), batch_size=5)  # a table works the same
    np.testing.assert_array_equal(table["energy"], [9, 10])


def test_declared_properties_and_non_periodic_stress():
    out = Toy(properties=("energy",), progress=False).predict(frames(2))
    assert out["forces"] is None and out["stress"] is None
    molecule = Toy(progress=False).predict(frames(2, pbc=(False, False, False)))
    assert np.isnan(molecule["stress"]).all() and molecule["energy"][0] == 9


def test_elements_are_checked_before_any_batch_runs():
    toy = Toy(progress=False)
    bad = frames(4)
    bad[2]["numbers"][0] = 26
    with pytest.raises(UnsupportedElementError, match=r"frame 'f2'.*element Fe.*'toy'"):
        toy.predict(bad, batch_size=1)
    assert toy.calls == [] and issubclass(UnsupportedElementError, XtalbenchError)


def test_a_backend_returning_the_wrong_count_is_caught():
    with pytest.raises(PredictionError, match=r"'toy': 2 energies for a batch of 3 frames starting at 'f0'"):
        Toy(broken=True, progress=False).predict(frames(3), batch_size=3)


def test_a_backend_returning_stresses_of_the_wrong_shape_is_caught():
    class ShortStress(Toy):
        def _predict_batch(self, rows):
            return {**super()._predict_batch(rows), "stress": np.zeros((len(rows), 3))}

    with pytest.raises(PredictionError, match=r"'toy': 6 stress values for the batch of 2 frames starting at 'f0'"):
        ShortStress(progress=False).predict(frames(2), batch_size=2)


def test_dtype_and_device_are_resolved_once():
    assert Toy(dtype="float32", progress=False).dtype == "float32"
    with pytest.raises(ModelLoadError, match="dtype 'float16'"):
        Toy(dtype="float16")
    assert Toy(device="auto", progress=False).device in ("cpu", "cuda")
    with pytest.raises(ModelLoadError, match="unknown device 'tpu'"):
        Toy(device="tpu")
