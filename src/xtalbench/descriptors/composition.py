"""Composition vectors: ElMD cumulative distributions and Magpie-style property statistics.

ElMD (Hargreaves et al., Chem. Mater. 2020) is the earth mover's distance between two element
distributions placed on a 1-D element scale. On a 1-D scale with integer positions the EMD is
exactly the L1 distance between the cumulative distributions, so
``ElMD(a, b) == |C(a) - C(b)|_1`` with ``C(x)[k] = sum of fractions of elements at position <= k``.
That turns ElMD into a Manhattan nearest-neighbour problem (see `xtalbench.dedup.stage`).

The element scales are read from the installed `ElMD` package's lookup tables, so positions
match it exactly, with two deliberate differences, both about elements ElMD mis-places:
- elements beyond Lr (Z > 103) sit at the placeholder position 0 in ElMD's tables; they are
  rejected here (a clear error) instead of silently landing on He (mod_petti) or Li (mendeleev);
- ElMD's `mendeleev` metric looks elements up through their mod_petti index, and the index 0
  resolves to the last placeholder element, so He is put at Li's Mendeleev number (0) instead
  of its own (97). Here He keeps its own number.
Compositions are normalised to fractions, as ElMD does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from xtalbench.core.schema import FrameError

KINDS = ("elmd_mod_petti", "elmd_mendeleev", "magpie")
# Distance each kind is meant to be compared with (what `xtalbench.dedup.stage` indexes).
KIND_METRIC = {"elmd_mod_petti": "manhattan", "elmd_mendeleev": "manhattan", "magpie": "euclidean"}
MAX_SCALE_Z = 103  # ElMD's 1-D scales give real positions up to Lr
MAGPIE_STATS = ("mean", "mean_abs_dev", "min", "max", "range")

_TOKEN = re.compile(r"\s*(?:([A-Z][a-z]*)|(\d+(?:\.\d*)?|\.\d+)|([(\[{])|([)\]}]))")
_CLOSE = {"(": ")", "[": "]", "{": "}"}


def _lookup_dir() -> Path:
    # find_spec does not execute ElMD/__init__.py (which imports pkg_resources and may fail).
    spec = find_spec("ElMD")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the ElMD package (its element lookup tables) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "el_lookup"


@lru_cache(maxsize=8)
def element_table(name: str) -> dict[str, Any]:
    """One of ElMD's element lookup tables (`mod_petti`, `mendeleev`, `magpie_sc`, ...)."""
    with open(_lookup_dir() / f"{name}.json") as handle:
        return json.load(handle)


@lru_cache(maxsize=4)
def scale_positions(scale: str) -> dict[str, int]:
    """Element symbol → integer position on a 1-D ElMD scale (Z <= 103 only; see module doc)."""
    from ase.data import atomic_numbers

    table = element_table(scale)
    return {el: int(pos) for el, pos in table.items() if 1 <= atomic_numbers.get(el, 0) <= MAX_SCALE_Z}


def parse_formula(formula: str, record: str = "?", field: str = "formula") -> dict[str, float]:
    """Chemical formula (nested brackets, decimal amounts) → element amounts; FrameError if malformed."""
    text = str(formula).strip()

    def fail(reason: str) -> FrameError:
        return FrameError(record, field, f"{reason} in formula {formula!r}")

    def group(pos: int, closer: str | None) -> tuple[dict[str, float], int]:
        counts: dict[str, float] = {}
        while True:
            m = _TOKEN.match(text, pos)
            if m is None:
                if pos >= len(text.rstrip()) and closer is None:
                    return counts, len(text)
                raise fail(f"unexpected {text[pos:pos + 8]!r}" if pos < len(text) else "unbalanced brackets")
            symbol, number, opener, close = m.groups()
            pos = m.end()
            if close:
                if close != closer:
                    raise fail("unbalanced brackets")
                return counts, pos
            if number:
                raise fail(f"amount {number} without an element")
            if symbol:
                part = {symbol: 1.0}
            else:
                part, pos = group(pos, _CLOSE[opener])
            m = _TOKEN.match(text, pos)
            if m is not None and m.group(2):
                amount = float(m.group(2))
                part = {el: n * amount for el, n in part.items()}
                pos = m.end()
            for el, n in part.items():
                counts[el] = counts.get(el, 0.0) + n

    counts, _ = group(0, None)
    if not counts or sum(counts.values()) <= 0:
        raise fail("no atoms")
    return counts


def as_counts(item: str | Mapping[Any, float], record: str = "?", field: str = "formula") -> dict[str, float]:
    """Formula string or {element symbol or atomic number: amount} → {symbol: amount}."""
    if isinstance(item, str):
        return parse_formula(item, record, field)
    if not isinstance(item, Mapping):
        raise FrameError(record, field, f"expected a formula or an element→amount mapping, got {type(item).__name__}")
    from ase.data import chemical_symbols

    counts: dict[str, float] = {}
    for key, amount in item.items():
        if isinstance(key, (int, np.integer)):
            if not 1 <= int(key) < len(chemical_symbols):
                raise FrameError(record, field, f"unknown element with atomic number {key}")
            key = chemical_symbols[int(key)]
        amount = float(amount)
        if not np.isfinite(amount) or amount < 0:
            raise FrameError(record, field, f"amount of {key} is {amount}")
        counts[str(key)] = counts.get(str(key), 0.0) + amount
    if sum(counts.values()) <= 0:
        raise FrameError(record, field, "no atoms")
    return counts


class CompositionFeaturizer:
    """Composition → fixed-length vector, scikit-learn style.

    kind:
      - ``elmd_mod_petti`` / ``elmd_mendeleev``: cumulative element distribution on that ElMD
        scale (one column per scale gap); the L1 distance between two rows *is* their ElMD.
      - ``magpie``: for each of ElMD's standardised Magpie element properties (`magpie_sc`),
        the fraction-weighted mean, mean absolute deviation, min, max and range (Euclidean).
    `transform` takes formulas or {element: amount} dicts; `records` names rows in errors.
    """

    def __init__(self, kind: str = "elmd_mod_petti", dtype: str = "float32"):
        self.kind = kind
        self.dtype = dtype

    @property
    def metric(self) -> str:
        return KIND_METRIC[self.kind]

    def fit(self, X: Any = None, y: Any = None) -> CompositionFeaturizer:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.kind == "magpie":
            table = element_table("magpie_sc")
            self.elements_ = sorted(table)
            self._index = {el: i for i, el in enumerate(self.elements_)}
            self._props = np.array([table[el] for el in self.elements_], dtype=np.float64)
            self.n_features_out_ = self._props.shape[1] * len(MAGPIE_STATS)
        else:
            positions = scale_positions(self.kind.removeprefix("elmd_"))
            self._index = positions
            self.elements_ = sorted(positions)
            self.n_features_out_ = max(positions.values())  # cumulative at the last position is always 1
        return self

    def check(self, item: str | Mapping[Any, float], record: str = "?", field: str = "formula") -> dict[str, float]:
        """Parse one composition and check every element is covered; FrameError otherwise."""
        if not hasattr(self, "_index"):
            self.fit()
        counts = as_counts(item, record, field)
        unknown = sorted(el for el in counts if el not in self._index)
        if unknown:
            raise FrameError(record, field, f"element(s) {unknown} not covered by the {self.kind} composition vector")
        return counts

    def transform(self, X: Sequence[str | Mapping[Any, float]], records: Sequence[str] | None = None, field: str = "formula") -> np.ndarray:
        if not hasattr(self, "_index"):
            self.fit()
        n = len(X)
        names = records if records is not None else [f"item {i}" for i in range(n)]
        rows, cols, vals = [], [], []
        for i, item in enumerate(X):
            counts = self.check(item, names[i], field)
            total = sum(counts.values())
            for el, amount in counts.items():
                if amount > 0:
                    rows.append(i)
                    cols.append(self._index[el])
                    vals.append(amount / total)
        rows_a = np.asarray(rows, dtype=np.int64)
        cols_a = np.asarray(cols, dtype=np.int64)
        vals_a = np.asarray(vals, dtype=np.float64)
        if self.kind == "magpie":
            out = self._magpie(n, rows_a, cols_a, vals_a)
        else:
            dense = np.zeros((n, self.n_features_out_ + 1), dtype=np.float64)
            np.add.at(dense, (rows_a, cols_a), vals_a)
            out = np.cumsum(dense, axis=1)[:, :-1]
        return np.ascontiguousarray(out, dtype=self.dtype)

    def fit_transform(self, X: Sequence[str | Mapping[Any, float]], y: Any = None, **kwargs: Any) -> np.ndarray:
        return self.fit(X).transform(X, **kwargs)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"kind": self.kind, "dtype": self.dtype}

    def _magpie(self, n: int, rows: np.ndarray, cols: np.ndarray, fracs: np.ndarray) -> np.ndarray:
        props = self._props[cols]  # (nnz, p)
        p = props.shape[1]
        weighted = props * fracs[:, None]
        mean = np.zeros((n, p))
        np.add.at(mean, rows, weighted)
        mad = np.zeros((n, p))
        np.add.at(mad, rows, np.abs(props - mean[rows]) * fracs[:, None])
        lo = np.full((n, p), np.inf)
        np.minimum.at(lo, rows, props)
        hi = np.full((n, p), -np.inf)
        np.maximum.at(hi, rows, props)
        return np.hstack([mean, mad, lo, hi, hi - lo])


def elmd(a: str | Mapping[Any, float], b: str | Mapping[Any, float], scale: str = "mod_petti") -> float:
    """ElMD between two compositions on a 1-D scale (`mod_petti` or `mendeleev`)."""
    featurizer = CompositionFeaturizer(kind=f"elmd_{scale}", dtype="float64").fit()
    x = featurizer.transform([a, b])
    return float(np.abs(x[0] - x[1]).sum())
