"""Like with like: a model's energies against a dataset's labels only when their conventions match.

A dataset's `level_of_theory` (params `datasets.<d>.level_of_theory`) reads
"<functional>, <energy convention>", e.g. "PBE/PBE+U, raw": MP-style GGA/GGA+U labels, uncorrected
totals. A model's comes from its YAML (`functional`, `energy_convention`; CHGNet-like models with
`mp2020_corrected`). `plan` decides, with the reason written to the metrics' notes:

- MP2020-corrected model vs raw labels: the MP2020 correction (pymatgen, MP's input set assumed,
  `xtalbench.evaluate.thermo`) comes off each prediction before the energy error is taken.
- raw vs raw of the same functional: compared as they are.
- a PBE-only model (MatPES) on PBE/PBE+U labels: frames whose chemistry MP computes with +U
  (Co Cr Fe Mn Mo Ni V W with O or F) are scored separately (`hubbard_u` subset); the headline
  scores are the GGA frames.
- formation-energy or empirical models, or different functionals: energies are not scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xtalbench.core.errors import XtalbenchError

DATASET_FUNCTIONALS = ("PBE", "PBE+U", "PBE/PBE+U", "PBEsol", "r2SCAN")
DATASET_CONVENTIONS = ("raw", "mp2020-corrected")


class ConventionError(XtalbenchError, ValueError):
    """A level of theory that cannot be read; names the dataset and the value."""


@dataclass(frozen=True)
class LevelOfTheory:
    functional: str
    energy_convention: str


def parse_level_of_theory(text: str | None, dataset: str) -> LevelOfTheory:
    """'PBE/PBE+U, raw' → LevelOfTheory; the error names the dataset and what is allowed."""
    where = f"params.yaml: datasets.{dataset}.level_of_theory"
    if not text:
        raise ConventionError(f"{where}: missing (zero-shot scoring needs '<functional>, <energy convention>', e.g. 'PBE/PBE+U, raw')")
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 2 or parts[0] not in DATASET_FUNCTIONALS or parts[1] not in DATASET_CONVENTIONS:
        raise ConventionError(f"{where} = {text!r}: expected '<functional>, <energy convention>' with functional one of "
                              f"{', '.join(DATASET_FUNCTIONALS)} and convention one of {', '.join(DATASET_CONVENTIONS)}")  # fmt: skip
    return LevelOfTheory(parts[0], parts[1])


def model_level_of_theory(spec: Any) -> LevelOfTheory:
    """The model's functional and energy convention from its spec (older specs: `mp2020_corrected`)."""
    from xtalbench.evaluate.scoring import energies_mp2020_corrected

    functional = str(getattr(spec, "functional", None) or "unknown")
    convention = getattr(spec, "energy_convention", None)
    if convention is None:
        if getattr(spec, "energy_kind", "total") == "formation":
            convention = "formation"
        else:
            convention = "mp2020-corrected" if energies_mp2020_corrected(spec) else "raw"
    return LevelOfTheory(functional, str(convention))


@dataclass
class Plan:
    """How one model × dataset pair is scored."""

    score_energy: bool = True
    remove_mp2020: bool = False  # subtract the MP2020 correction from predicted energies
    separate_hubbard: bool = False  # +U chemistries scored apart; headline = GGA frames
    notes: list[str] = field(default_factory=list)


def plan(model: LevelOfTheory, data: LevelOfTheory, model_name: str, dataset: str) -> Plan:
    """The scoring plan of `model_name` on `dataset`, every decision with its reason."""
    out = Plan()
    if model.energy_convention in ("formation", "empirical"):
        out.score_energy = False
        out.notes.append(f"energy not scored: {model_name} predicts {model.energy_convention} energies, {dataset} has {data.energy_convention} DFT totals")
    elif model.energy_convention == "mp2020-corrected" and data.energy_convention == "raw":
        out.remove_mp2020 = True
        out.notes.append(f"{model_name} predicts MP2020-corrected totals, {dataset} labels are raw: the MP2020 correction "
                         "(pymatgen MaterialsProject2020Compatibility, MP input set assumed) is subtracted from each prediction")  # fmt: skip
    elif model.energy_convention == "raw" and data.energy_convention == "mp2020-corrected":
        out.score_energy = False
        out.notes.append(f"energy not scored: {model_name} predicts raw totals, {dataset} labels are MP2020-corrected")
    else:
        out.notes.append(f"energies compared as they are ({model.energy_convention} vs {data.energy_convention})")
    if model.functional == "PBE" and data.functional in ("PBE/PBE+U", "PBE+U"):
        out.separate_hubbard = True
        out.notes.append(f"{model_name} was trained on PBE without +U, {dataset} labels are {data.functional}: frames of +U chemistries "
                         "(MP's U on Co Cr Fe Mn Mo Ni V W with O or F) are scored separately under `hubbard_u`; headline scores are the GGA frames")  # fmt: skip
    elif model.functional in ("unknown", "none"):
        out.notes.append(f"{model_name} records no functional: compared with {data.functional} labels without a level-of-theory check")
    elif model.functional not in (data.functional, "PBE/PBE+U") or (model.functional == "PBE/PBE+U" and data.functional not in ("PBE/PBE+U", "PBE+U", "PBE")):
        out.score_energy = False
        out.notes.append(f"energy not scored: {model_name} is {model.functional}, {dataset} labels are {data.functional}")
    return out


def hubbard_frame(numbers: list[int]) -> bool:
    """Whether MP computes this composition with +U (MPRelaxSet's LDAUU table)."""
    from collections import Counter

    from xtalbench.core.schema import element_symbol
    from xtalbench.evaluate.thermo import mp2020_parameters

    composition = {element_symbol(int(z)): float(n) for z, n in Counter(int(z) for z in numbers).items()}
    try:
        return bool(mp2020_parameters(composition)["is_hubbard"])
    except ValueError:
        return False
