"""Formation energies, predicted hull distances and stability classification on MP data.

MP formation energies (the `formation_energy_per_atom` labels of relaxed MP structures) are
MP2020-corrected and referenced to MP's elemental ground states; raw MLIP total energies are
neither. `MP2020FormationEnergy` puts a predicted total energy on the same footing:

1. **Calculation parameters.** `MaterialsProject2020Compatibility` needs the VASP parameters of
   the run (run type, Hubbard U values, POTCARs), which a model prediction (and the mp20 data)
   do not have. As Matbench Discovery and fairchem's OMat24 tooling do for MLIP energies, we
   assume the structure was computed with MP's standard input set and derive the parameters
   from pymatgen's `MPRelaxSet` config (what MPRelaxSet would have written for this
   composition): U = `LDAUU[<most electronegative element>][el]` — non-zero only for Co Cr Fe
   Mn Mo Ni V W in oxides and fluorides (O or F the most electronegative element) — so
   `run_type` is `GGA+U` with `hubbards` = those U values, else `GGA` with no U; POTCAR symbols
   are `PAW_PBE <MPRelaxSet POTCAR[el]>` (e.g. `Fe_pv`), which the compatibility's POTCAR
   check then accepts. MPtrj-trained models reproduce exactly this GGA/GGA+U mixture.
2. **Correction.** A `ComputedStructureEntry` with those parameters goes through
   `MaterialsProject2020Compatibility()` (Advanced scheme, `strict_anions="require_bound"`)
   with the two inputs MP itself stores with each entry (`mp_entry_data`): `oxide_type` as
   emmet computes it (`oxide_type(structure)`, relative cutoff 1.1 Å — pymatgen's own fallback
   uses 1.05 Å and calls e.g. LiFeO3 mp-761189 a peroxide, −7.302 eV instead of MP's −5.478 eV)
   and `oxidation_states` as emmet's `OxidationStateDoc` assigns them (BVAnalyzer, averaged per
   element; if it fails, the first `oxi_state_guesses(max_sites=-50)`; pymatgen's own fallback
   guesses with `max_sites=-20` only). MP2020 corrections depend on the composition and
   structure only, never on the energy, so the correction of each frame is computed once and
   added to any predicted energy of that frame.
3. **Formation energy.** E_form = (E + correction − Σ_i n_i μ_i) / N, where μ_i is the energy
   per atom of element i's MP reference entry (lowest-energy MP entry of the element,
   2023-02-07, from Matbench Discovery; elemental entries carry no MP2020 correction).

Predicted hull distance by the *shift formula*: E_hull,pred = E_hull,MP + (E_form,pred − E_form,MP),
i.e. the model's error moves the material against MP's own hull. It is exact only for materials
above the hull (E_hull,MP > 0); on the hull it reduces to the sign of the error. Hull-aware
decomposition energies (Bartel et al. 2020) are in `xtalbench.evaluate.hull`.
"""

from __future__ import annotations

import gzip
import json
import warnings
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from xtalbench.core.errors import XtalbenchError

MP_REFERENCES = Path("../shared/data/mp-references/2023-02-07-mp-elemental-reference-entries.json.gz")
DEFAULT_STABILITY_THRESHOLD = 0.0  # eV/atom; stable ⇔ E_hull ≤ threshold
OXIDE_TYPE_CUTOFF = 1.1  # emmet: `oxide_type(structure)` with pymatgen's default relative cutoff
OXI_GUESS_MAX_SITES = -50  # emmet OxidationStateDoc fallback: `oxi_state_guesses(max_sites=-50)`


class ThermoError(XtalbenchError, ValueError):
    """A frame whose formation energy cannot be computed; names the record and the field."""

    def __init__(self, record: str, field: str, reason: str):
        self.record, self.field, self.reason = record, field, reason
        super().__init__(f"record {record!r}, field {field!r}: {reason}")


@lru_cache(maxsize=4)
def load_reference_energies(path: str | Path = MP_REFERENCES) -> dict[str, float]:
    """Element symbol → corrected energy per atom (eV/atom) of its MP reference entry."""
    from pymatgen.entries.computed_entries import ComputedEntry

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"MP elemental reference entries not found at {path} (params: evaluate.mp_references)")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        raw = json.load(handle)
    refs: dict[str, float] = {}
    for symbol, entry_dict in raw.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no Pauling electronegativity for Ne" and the like
            entry = ComputedEntry.from_dict(entry_dict)
        if not entry.composition.is_element or str(entry.composition.elements[0]) != symbol:
            raise ValueError(f"{path}: entry {symbol!r} is not an elemental entry ({entry.composition.formula})")
        refs[symbol] = float(entry.energy_per_atom)
    return refs


def formation_energy_per_atom(energy: float, composition: Mapping[str, float], references: Mapping[str, float], record: str = "?") -> float:
    """(E − Σ n_i μ_i) / N in eV/atom; `energy` must already carry the MP2020 correction."""
    n_total = float(sum(composition.values()))
    missing = sorted(el for el in composition if el not in references)
    if missing:
        raise ThermoError(record, "numbers", f"no MP elemental reference energy for {', '.join(missing)}")
    return (float(energy) - sum(float(n) * references[el] for el, n in composition.items())) / n_total


def mp2020_parameters(composition: Mapping[str, float]) -> dict[str, Any]:
    """The ComputedEntry parameters MPRelaxSet would have produced for this composition.

    See the module docstring: U from `MPRelaxSet.CONFIG["INCAR"]["LDAUU"]` keyed by the most
    electronegative element, PBE POTCAR symbols from `MPRelaxSet.CONFIG["POTCAR"]`.
    """
    from pymatgen.core import Element
    from pymatgen.io.vasp.sets import MPRelaxSet

    config = MPRelaxSet.CONFIG
    symbols = sorted((el for el, n in composition.items() if n > 0), key=lambda el: Element(el).X)
    most_electroneg = symbols[-1]
    u_table = config["INCAR"]["LDAUU"].get(most_electroneg, {})
    hubbards = {el: float(u_table[el]) for el in symbols if isinstance(u_table, dict) and float(u_table.get(el, 0)) > 0}
    missing = [el for el in symbols if el not in config["POTCAR"]]
    if missing:
        raise ValueError(f"MPRelaxSet has no POTCAR for {', '.join(missing)}")
    functional = config.get("POTCAR_FUNCTIONAL", "PBE")
    return {
        "run_type": "GGA+U" if hubbards else "GGA",
        "is_hubbard": bool(hubbards),
        "hubbards": hubbards,
        "potcar_symbols": [f"PAW_{functional} {config['POTCAR'][el]}" for el in sorted(symbols)],
    }


def mp_oxidation_states(structure: Any) -> dict[str, float]:
    """Average oxidation state per element as emmet's `OxidationStateDoc` assigns it.

    BVAnalyzer valences (magnetic moments and oxidation states removed first), averaged over the
    sites of each element; if BVAnalyzer fails, the first `oxi_state_guesses(max_sites=-50)`;
    `{}` if both fail (MP2020 then corrects only the most electronegative anion).
    """
    from pymatgen.analysis.bond_valence import BVAnalyzer

    structure = structure.copy()
    structure.remove_oxidation_states()
    if "magmom" in structure.site_properties:
        structure.remove_site_property("magmom")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            valences = BVAnalyzer().get_valences(structure)
        except Exception:  # noqa: BLE001 - emmet catches everything here too, then guesses
            valences = None
        if valences is not None:
            per_element: dict[str, list[float]] = {}
            for site, valence in zip(structure, valences, strict=True):
                per_element.setdefault(str(site.specie), []).append(float(valence))
            return {el: float(np.mean(v)) for el, v in per_element.items()}
        try:
            guess = structure.composition.oxi_state_guesses(max_sites=OXI_GUESS_MAX_SITES)
        except Exception:  # noqa: BLE001
            return {}
    return {str(el): float(v) for el, v in guess[0].items()} if guess else {}


def mp_entry_data(structure: Any) -> dict[str, Any]:
    """`oxide_type` and `oxidation_states` as MP's entries carry them (see the module docstring)."""
    from pymatgen.analysis.structure_analyzer import oxide_type

    return {"oxide_type": oxide_type(structure, OXIDE_TYPE_CUTOFF), "oxidation_states": mp_oxidation_states(structure)}


class MP2020FormationEnergy:
    """Predicted total energies → MP2020-corrected formation energies per atom.

    `correction(structure)` is the MP2020 correction (eV, whole cell) of a structure computed
    with MP's input set; `transform(energies, structures)` gives E_form per atom. Parameters:
    `references` (the MP elemental reference entries file) and `compatibility` (False: skip
    the MP2020 correction, for energies that already include it).
    """

    def __init__(self, references: str | Path = MP_REFERENCES, compatibility: bool = True):
        self.references = references
        self.compatibility = compatibility

    def fit(self, *_: Any) -> MP2020FormationEnergy:
        self.references_ = load_reference_energies(self.references)
        return self

    def _refs(self) -> dict[str, float]:
        if not hasattr(self, "references_"):
            self.fit()
        return self.references_

    def correction(self, structure: Any, record: str = "?") -> float:
        """MP2020 energy correction (eV, whole cell) of a pymatgen Structure; ThermoError if incompatible."""
        if not self.compatibility:
            return 0.0
        from pymatgen.analysis.compatibility import CompatibilityError
        from pymatgen.entries.computed_entries import ComputedStructureEntry

        composition = {str(el): float(n) for el, n in structure.composition.items()}
        try:
            parameters = mp2020_parameters(composition)
        except ValueError as error:
            raise ThermoError(record, "numbers", str(error)) from None
        entry = ComputedStructureEntry(structure, 0.0, parameters=parameters, data=mp_entry_data(structure), entry_id=record)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "failed to guess oxidation states" etc.: handled by the scheme
            try:
                processed = _compatibility().process_entry(entry, on_error="raise")
            except CompatibilityError as error:
                raise ThermoError(record, "energy", f"MP2020 compatibility rejected the entry: {error}") from None
        if processed is None:
            raise ThermoError(record, "energy", "MP2020 compatibility discarded the entry")
        return float(processed.correction)

    def e_form_per_atom(self, energy: float, structure: Any, correction: float | None = None, record: str = "?") -> float:
        """E_form (eV/atom) of a structure with uncorrected total energy `energy` (eV)."""
        if correction is None:
            correction = self.correction(structure, record)
        composition = {str(el): float(n) for el, n in structure.composition.items()}
        return formation_energy_per_atom(energy + correction, composition, self._refs(), record)

    def transform(self, energies: Sequence[float], structures: Sequence[Any]) -> np.ndarray:
        return np.array([self.e_form_per_atom(e, s) for e, s in zip(energies, structures, strict=True)], dtype=np.float64)


@lru_cache(maxsize=1)
def _compatibility():
    from pymatgen.analysis.compatibility import MaterialsProject2020Compatibility

    return MaterialsProject2020Compatibility(check_potcar=True)


def predicted_e_hull(e_hull_mp: np.ndarray, e_form_pred: np.ndarray, e_form_mp: np.ndarray) -> np.ndarray:
    """E_hull,pred = E_hull,MP + (E_form,pred − E_form,MP), eV/atom."""
    return np.asarray(e_hull_mp, dtype=np.float64) + (np.asarray(e_form_pred, dtype=np.float64) - np.asarray(e_form_mp, dtype=np.float64))


def stability_metrics(e_hull_true: np.ndarray, e_hull_pred: np.ndarray, threshold: float = DEFAULT_STABILITY_THRESHOLD,
                      tolerance: float = 0.0) -> dict[str, float | int | None]:  # fmt: skip
    """Stable ⇔ energy ≤ threshold + tolerance. Classification scores of predicted vs true stability.

    The energies are hull distances or decomposition energies (eV/atom). As in Matbench
    Discovery, a missing prediction (NaN) counts as predicted unstable (`n_missing`); rows
    without a true label are left out. DAF (discovery acceleration factor) = precision /
    prevalence, the prevalence being the stable fraction of the rows scored here (this set,
    missing predictions included), not of a whole dataset. False-kill rate = stable materials
    predicted unstable / stable materials (= 1 − recall). Undefined ratios are None: precision
    with no predicted positive, recall and prevalence-based ones with no true positive, F1 with
    no true positive (precision and recall both 0 or undefined: NaN in Matbench Discovery).
    """
    e_true = np.asarray(e_hull_true, dtype=np.float64)
    e_pred = np.asarray(e_hull_pred, dtype=np.float64)
    labelled = np.isfinite(e_true)
    e_true, e_pred = e_true[labelled], e_pred[labelled]
    cut = threshold + tolerance
    true = e_true <= cut
    pred = np.isfinite(e_pred) & (e_pred <= cut)
    tp = int(np.sum(true & pred))
    fp = int(np.sum(~true & pred))
    fn = int(np.sum(true & ~pred))
    tn = int(np.sum(~true & ~pred))
    n = tp + fp + fn + tn
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    prevalence = (tp + fn) / n if n else None
    return {
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else None,
        "precision": precision,
        "recall": recall,
        "accuracy": (tp + tn) / n if n else None,
        "daf": precision / prevalence if precision is not None and prevalence else None,
        "false_kill_rate": fn / (tp + fn) if tp + fn else None,
        "prevalence": prevalence,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "n_missing": int(np.sum(~np.isfinite(e_pred))),
    }
