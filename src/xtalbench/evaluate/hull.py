"""Hull-aware stability: decomposition energies against the hull of all *other* competing phases.

Bartel et al. (npj Comput. Mater. 6, 97, 2020): a material's decomposition energy E_d is its
formation energy minus the lower convex hull at its composition built from every *other* phase
(its own entry left out, polymorphs kept). E_d = E_hull > 0 above the hull; on the hull E_d ≤ 0 is
the margin by which it is stable, so a 1 meV/atom error no longer flips it.

Competing phases (`CompetingPhases`): MP formation energies per composition
(`mp-formation.csv.gz`, CompRhys/roost, 2019-2020 MP; `PDEntry` energy = E_form × N, elements at
0) with the dataset's own labelled entries replacing or adding to them by material id. The CSV
holds one entry per composition, so polymorphs compete only through the dataset's own entries.

One correction scheme: the CSV predates MP2020 for several anions (Br, Se, Te, I, S ...), so
`scheme_check` compares it with the labels on the materials present in both (median offset,
count beyond 5 meV/atom). Policy `correct` (default) fits one energy per atom of each element
in compounds (how MP corrections are built: per anion / U-metal atom, elements untouched) on
those shared materials (trimmed least squares) and adds it to the CSV compounds; `refuse`
raises `HullSchemeError` when more than `max_disagreement` of the shared materials disagree.

Which number each material gets (`decomposition_energies`), for the label; a prediction is the
label plus its E_form error (the hull of the *other* phases does not depend on it):
- label E_hull > 0: E_d = E_hull,MP (the shift formula is exact there; MP's own hull);
- label on the hull: E_d = E_form,label − hull of the others at its composition, a linear
  programme over the phases in its chemical (sub)systems (scipy HiGHS; equal to pymatgen's
  `PhaseDiagram(others).get_hull_energy_per_atom`, which the tests check, without building a
  PhaseDiagram per left-out material; each chemical system's phase matrix is cached) — if that is > 0
  (a competing phase below a material the labels call stable: a scheme mismatch) the material
  falls back to E_d = 0 (the shift formula) and is counted in `n_on_hull_inconsistent`.
  Elements are the references at 0 in every scheme: an elemental ground state gets E_d = 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xtalbench.core.errors import XtalbenchError

MP_FORMATION = Path("../shared/data/mp-compositions/mp-formation.csv.gz")
SCHEME_TOLERANCE = 0.005  # eV/atom: "disagree" in the scheme check
TRIM_RESIDUAL = 0.05  # eV/atom: shared materials further off than this are left out of the offset fit
TRIM_ITERATIONS = 10
BASIS_ABOVE_HULL = 1  # E_d = label E_hull (shift formula, exact above the hull)
BASIS_MARGIN = 2  # E_d = E_form − hull of the other phases
BASIS_FALLBACK = 3  # on-hull label contradicted by the competing phases: E_d = 0 (shift formula)


class HullError(XtalbenchError, ValueError):
    """Competing phases that cannot be read or used; names the file, record and field."""


class HullSchemeError(HullError):
    """The competing phases and the labels are on different correction schemes (policy `refuse`)."""


@lru_cache(maxsize=200_000)
def parse_formula(formula: str) -> tuple[tuple[str, float], ...]:
    """Element amounts of a formula (pymatgen's parser), sorted by element symbol."""
    from pymatgen.core import Composition

    comp = Composition(formula)
    return tuple(sorted((str(el), float(n)) for el, n in comp.get_el_amt_dict().items() if n > 0))


def load_mp_formation(path: str | Path = MP_FORMATION) -> pd.DataFrame:
    """`material_id`, `formula`, `e_form` (eV/atom) of the MP formation-energy CSV."""
    path = Path(path)
    if not path.exists():
        raise HullError(f"{path}: MP formation energies not found (params: evaluate.competing_phases)")
    df = pd.read_csv(path, keep_default_na=False, dtype={"task_id": str, "composition": str})
    for column in ("task_id", "composition", "formation_energy_per_atom"):
        if column not in df.columns:
            raise HullError(f"{path}: field {column!r} missing")
    e_form = pd.to_numeric(df["formation_energy_per_atom"], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(e_form))
    if len(bad):
        raise HullError(f"{path}: record {df['task_id'].iloc[bad[0]]!r}, field 'formation_energy_per_atom': not a finite number")
    return pd.DataFrame({"material_id": df["task_id"].to_numpy(), "formula": df["composition"].to_numpy(), "e_form": e_form})


def _fractions(amounts: Sequence[tuple[str, float]]) -> dict[str, float]:
    total = sum(n for _, n in amounts)
    return {el: n / total for el, n in amounts}


@dataclass
class SchemeCheck:
    """Labels vs competing phases on the materials present in both (eV/atom)."""

    n_shared: int
    median_offset: float | None  # median(label − competing)
    n_beyond_tolerance: int
    n_beyond_after_correction: int
    element_offsets: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_shared_materials": self.n_shared,
            "median_offset_eV_per_atom": self.median_offset,
            "tolerance_eV_per_atom": SCHEME_TOLERANCE,
            "n_beyond_tolerance": self.n_beyond_tolerance,
            "n_beyond_tolerance_after_correction": self.n_beyond_after_correction,
            "element_offsets_eV_per_atom": {k: round(v, 6) for k, v in sorted(self.element_offsets.items())},
        }


def scheme_check(labels: pd.DataFrame, phases: pd.DataFrame, fit: bool = True) -> SchemeCheck:
    """Compare label and competing E_form on shared material ids; fit per-element offsets.

    The offsets δ_el model label − competing = Σ_el x_el δ_el for compounds (x: atomic
    fractions; elements are 0 in both schemes and are not fitted): least squares (minimum norm),
    refitted without the materials more than TRIM_RESIDUAL off (recomputed in a later MP
    version, not a scheme difference) until that set is stable. On mp20 it recovers MP2020's
    anion corrections the CSV lacks (Br −0.532, Se −0.468, Te −0.419, I −0.374 eV/atom fitted;
    MP2020: −0.534, −0.472, −0.422, −0.379).
    """
    shared = labels.merge(phases, on="material_id", suffixes=("_label", ""))
    shared = shared[[len(parse_formula(f)) > 1 for f in shared["formula"]]] if len(shared) else shared
    if not len(shared):
        return SchemeCheck(0, None, 0, 0)
    diff = shared["e_form_label"].to_numpy() - shared["e_form"].to_numpy()
    n_beyond = int(np.sum(np.abs(diff) > SCHEME_TOLERANCE))
    if not fit:
        return SchemeCheck(len(shared), float(np.median(diff)), n_beyond, n_beyond)
    fracs = [_fractions(parse_formula(f)) for f in shared["formula"]]
    elements = sorted({el for f in fracs for el in f})
    col = {el: i for i, el in enumerate(elements)}
    X = np.zeros((len(fracs), len(elements)))
    for i, f in enumerate(fracs):
        for el, x in f.items():
            X[i, col[el]] = x
    delta, *_ = np.linalg.lstsq(X, diff, rcond=None)
    keep = np.ones(len(diff), dtype=bool)
    for _ in range(TRIM_ITERATIONS):  # trimmed least squares: recalculated materials are outliers, not scheme
        new_keep = np.abs(diff - X @ delta) < TRIM_RESIDUAL
        if np.array_equal(new_keep, keep) or not new_keep.any():
            break
        keep = new_keep
        delta, *_ = np.linalg.lstsq(X[keep], diff[keep], rcond=None)
    residual = diff - X @ delta
    return SchemeCheck(len(shared), float(np.median(diff)), n_beyond, int(np.sum(np.abs(residual) > SCHEME_TOLERANCE)), dict(zip(elements, map(float, delta), strict=True)))


class CompetingPhases:
    """Formation energies of competing phases indexed by element set, with hull queries.

    `entries`: `material_id`, `formula` (or `amounts`), `e_form` (eV/atom). Elements are always
    present at 0. `hull_energy(amounts, exclude)` is the lower hull at that composition of all
    phases but `exclude` (eV/atom).
    """

    def __init__(self, entries: pd.DataFrame):
        self.ids = entries["material_id"].astype(str).to_numpy()
        self.e_form = entries["e_form"].to_numpy(dtype=np.float64)
        self.fracs = [_fractions(parse_formula(f)) for f in entries["formula"]]
        by_space: dict[frozenset[str], list[int]] = {}
        for i, f in enumerate(self.fracs):
            if len(f) > 1:  # elements: added at 0 per query
                by_space.setdefault(frozenset(f), []).append(i)
        self.by_space = {k: np.array(v, dtype=np.int64) for k, v in by_space.items()}
        self._cache: dict[frozenset[str], tuple[list[str], np.ndarray, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def _system(self, elements: frozenset[str]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """(elements, fraction matrix (n_el, n_phases), energies, phase index) of a chemical system, cached."""
        if elements not in self._cache:
            els = sorted(elements)
            rows = [self.by_space[frozenset(s)] for k in range(2, len(els) + 1) for s in combinations(els, k) if frozenset(s) in self.by_space]
            idx = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
            A = np.zeros((len(els), len(els) + len(idx)))
            A[:, : len(els)] = np.eye(len(els))  # the elements, at 0
            for j, i in enumerate(idx):
                for el, x in self.fracs[i].items():
                    A[els.index(el), len(els) + j] = x
            energies = np.concatenate([np.zeros(len(els)), self.e_form[idx]])
            self._cache[elements] = (els, A, energies, np.concatenate([np.full(len(els), -1), idx]))
        return self._cache[elements]

    def hull_energy(self, amounts: Mapping[str, float], exclude: str | None = None) -> float:
        """Lower convex hull (eV/atom) at this composition of every phase except material `exclude`."""
        from scipy.optimize import linprog

        total = float(sum(amounts.values()))
        els, A, energies, idx = self._system(frozenset(el for el, n in amounts.items() if n > 0))
        keep = np.ones(len(idx), dtype=bool)
        if exclude is not None:
            keep[len(els) :] = self.ids[idx[len(els) :]] != exclude
        b = np.array([float(amounts.get(el, 0.0)) / total for el in els])
        result = linprog(energies[keep], A_eq=A[:, keep], b_eq=b, bounds=(0, None), method="highs")
        if result.status != 0:
            raise HullError(f"hull at {dict(amounts)}: linear programme failed ({result.message})")
        return float(result.fun)


def build_competing_phases(labels: pd.DataFrame, path: str | Path = MP_FORMATION, policy: str = "correct",
                           max_disagreement: float = 0.05) -> tuple[CompetingPhases, dict[str, Any]]:  # fmt: skip
    """Competing phases (CSV, scheme-checked, with the dataset's own entries) and the check's report.

    `labels`: `material_id`, `formula`, `e_form` of the dataset's labelled materials.
    """
    if policy not in ("correct", "refuse"):
        raise HullError(f"params evaluate.hull_scheme_policy = {policy!r}: expected 'correct' or 'refuse'")
    phases = load_mp_formation(path)
    check = scheme_check(labels, phases, fit=policy == "correct")
    report: dict[str, Any] = {"source": str(path), "n_competing_phases": len(phases), "policy": policy, **check.as_dict()}
    if policy == "refuse" and check.n_shared and check.n_beyond_tolerance > max_disagreement * check.n_shared:
        raise HullSchemeError(
            f"{path}: {check.n_beyond_tolerance} of {check.n_shared} materials also in the dataset differ from their labels by more than "
            f"{SCHEME_TOLERANCE * 1000:g} meV/atom (median offset {check.median_offset:+.4f} eV/atom): not one correction scheme "
            "(params evaluate.hull_scheme_policy: correct)"
        )
    if policy == "correct" and check.element_offsets:
        shift = np.array([sum(x * check.element_offsets.get(el, 0.0) for el, x in _fractions(parse_formula(f)).items()) if len(parse_formula(f)) > 1 else 0.0
                          for f in phases["formula"]])  # fmt: skip
        phases = phases.assign(e_form=phases["e_form"].to_numpy() + shift)
    own = labels.drop_duplicates("material_id", keep="first")
    merged = pd.concat([own[["material_id", "formula", "e_form"]], phases[~phases["material_id"].isin(set(own["material_id"]))]], ignore_index=True)
    report["n_dataset_entries"] = len(own)
    report["n_phases_used"] = len(merged)
    return CompetingPhases(merged), report


def decomposition_energies(phases: CompetingPhases, material_ids: Sequence[str], formulas: Sequence[str], e_form: np.ndarray,
                           e_hull: np.ndarray, progress: bool = False, check_above: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:  # fmt: skip
    """Label decomposition energies (eV/atom), their basis codes (BASIS_*) and counts.

    NaN (basis 0) where E_form or E_hull is missing; see the module docstring for the rules.
    `check_above`: also compute E_form − hull of the others for the materials above the hull
    and compare it with their E_hull label (`above_hull_check`: how far these competing phases
    are from MP's own hull; one more linear programme per such material).
    """
    from tqdm import tqdm

    e_form = np.asarray(e_form, dtype=np.float64)
    e_hull = np.asarray(e_hull, dtype=np.float64)
    out = np.full(len(e_form), np.nan)
    basis = np.zeros(len(e_form), dtype=np.int8)
    above = np.isfinite(e_form) & np.isfinite(e_hull) & (e_hull > 0)
    out[above] = e_hull[above]
    basis[above] = BASIS_ABOVE_HULL
    on_hull = np.flatnonzero(np.isfinite(e_form) & np.isfinite(e_hull) & (e_hull <= 0))
    for i in tqdm(on_hull, desc="decomposition energies", unit="material", leave=False, disable=not progress or None):
        amounts = dict(parse_formula(str(formulas[i])))
        margin = e_form[i] - phases.hull_energy(amounts, exclude=str(material_ids[i]))
        if margin > 0:
            out[i], basis[i] = 0.0, BASIS_FALLBACK
        else:
            out[i], basis[i] = margin, BASIS_MARGIN
    counts: dict[str, Any] = {
        "n_labelled": int(np.sum(basis > 0)),
        "n_above_hull": int(np.sum(basis == BASIS_ABOVE_HULL)),
        "n_on_hull_margin": int(np.sum(basis == BASIS_MARGIN)),
        "n_on_hull_inconsistent": int(np.sum(basis == BASIS_FALLBACK)),
    }
    if check_above and above.any():
        idx = np.flatnonzero(above)
        diff = np.array([e_form[i] - phases.hull_energy(dict(parse_formula(str(formulas[i]))), exclude=str(material_ids[i])) - e_hull[i] for i in idx])
        counts["above_hull_check"] = {
            "what": "E_form − hull of the other competing phases, minus the E_hull label, on materials above the hull",
            "n": len(idx),
            "median_eV_per_atom": float(np.median(diff)),
            "p05_p95_eV_per_atom": [float(np.percentile(diff, 5)), float(np.percentile(diff, 95))],
            "n_beyond_tolerance": int(np.sum(np.abs(diff) > SCHEME_TOLERANCE)),
        }
    return out, basis, counts
