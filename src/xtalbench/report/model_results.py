"""A model card's sections beyond the root splits: zero-shot scores on the MatterSim sets, the
diatomic curves, phonons and MD, read from the leaderboard and dynamics stages' metrics files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xtalbench.governance.gates import is_number
from xtalbench.report.stage import NOT_COMPUTED, md_table, read_json

LEADERBOARD = Path("metrics/zeroshot/leaderboard.json")
PHONONS = Path("metrics/dynamics/phonons.json")
MD = Path("metrics/dynamics/md.json")

# leaderboard key, column label, factor to the label's unit
ZEROSHOT_COLUMNS = (
    ("energy_mae_meV_per_atom", "energy MAE (meV/atom)", 1.0),
    ("force_mae_vector_norm_meV_per_A", "force MAE, vector norm (eV/Å)", 1e-3),
    ("force_mae_component_meV_per_A", "force MAE, per component (eV/Å)", 1e-3),
    ("stress_mae_GPa", "stress MAE (GPa)", 1.0),
)
DIATOMIC_LABELS = {
    "pairs": "pairs scored",
    "curve_rmse_capped_median_eV": "curve RMSE vs DFT, median over pairs (eV; energies capped)",
    "r_eq_median_abs_error_A": "equilibrium distance, median |error| (Å)",
    "well_depth_median_abs_error_eV": "well depth, median |error| (eV)",
    "pairs_with_spurious_minima": "pairs with spurious minima",
    "pairs_without_repulsion": "pairs without short-range repulsion",
    "force_consistency_capped_mae_eV_per_A": "|F + dE/dr| MAE (eV/Å; energies capped)",
}
PHONON_COLUMNS = (
    ("rmse_omega2_THz2", "RMSE ω² (THz²)"),
    ("rmse_frequency_THz", "RMSE ω (THz)"),
    ("max_frequency_error_THz", "max |Δω| (THz)"),
    ("rmse_group_velocity_THz_A", "RMSE group velocity (THz·Å)"),
)


@dataclass(frozen=True)
class StageResults:
    """The leaderboard, phonons and MD metrics files, read once for every card ({} where not run)."""

    board: Mapping[str, Any]
    phonons: Mapping[str, Any]
    md: Mapping[str, Any]

    @classmethod
    def load(cls, root: Path) -> StageResults:
        return cls(*(read_json(root / path) or {} for path in (LEADERBOARD, PHONONS, MD)))

    def model_names(self) -> set[str]:
        """Every model these stages scored (a card is written for each)."""
        return {name for data in (self.board, self.phonons, self.md) for name in (data.get("models") or {})}


@dataclass
class BeyondSplits:
    """What these stages add to a model card: its sections, throughput rows and limitations."""

    lines: list[str] = field(default_factory=list)
    throughput: list[list[Any]] = field(default_factory=list)  # [where, key, value]
    limitations: list[str] = field(default_factory=list)


def beyond_splits(model: str, results: StageResults) -> BeyondSplits:
    """The zero-shot, diatomics, phonons and MD sections of `model` (empty where it was not run)."""
    entry = (results.board.get("models") or {}).get(model)
    out = BeyondSplits(lines=zeroshot_lines(model, results.board) + phonon_lines(model, results.phonons) + md_lines(model, results.md))
    if isinstance(entry, Mapping):
        hardware = entry.get("hardware") or {}
        out.throughput = [["zero-shot sets", f"`{k}`", v] for k, v in sorted((entry.get("throughput") or {}).items())]
        out.throughput += [["zero-shot sets", f"`hardware.{k}`", v] for k, v in sorted(hardware.items())]
        out.limitations = zeroshot_limitations(entry)
    return out


def zeroshot_limitations(entry: Mapping[str, Any], at_least: float = 1.5) -> list[str]:
    """Errors whose unseen/seen ratio is at least `at_least` with the whole CI above 1."""
    items = []
    for comparison, block in sorted((entry.get("ratios") or {}).items()):
        for metric, r in sorted((block or {}).items()):
            ci = r.get("ci") if isinstance(r, Mapping) else None
            if isinstance(ci, list) and is_number(ci[0]) and ci[0] > 1 and r["ratio"] >= at_least:
                items.append(f"`{comparison}`: {metric} is {r['ratio']:.3g}× [{ci[0]:.3g}, {ci[1]:.3g}] its value on the seen "
                             f"set `{entry.get('seen_set')}`.")
    return items  # a non-ok status: its YAML's known_issues, listed by the card itself


def _with_ci(value: Any, ci: Any, factor: float) -> str:
    if not is_number(value):
        return NOT_COMPUTED
    text = f"{value * factor:.4g}"
    if isinstance(ci, list) and len(ci) == 2 and all(is_number(c) for c in ci):
        text += f" [{ci[0] * factor:.4g}, {ci[1] * factor:.4g}]"
    return text


def zeroshot_lines(model: str, board: Mapping[str, Any]) -> list[str]:
    entry = (board.get("models") or {}).get(model)
    if not isinstance(entry, Mapping):
        return []
    lines = ["## Zero-shot on real DFT sets (MatterSim benchmarks)", "",
             f"From `{LEADERBOARD}` (stage `leaderboard`): seeded samples of each set, 95% material-bootstrap CIs in brackets. "
             f"Seen set: `{entry.get('seen_set')}`; {entry.get('seen_note', '')}.", ""]
    status = entry.get("status") or {}
    if status.get("status", "ok") != "ok":
        lines += [f"**⚠ {status['status']}:** {status.get('known_issues') or 'see its YAML'}", ""]
    contamination = entry.get("contamination") or {}
    rows = []
    for dataset in board.get("datasets") or sorted(entry.get("datasets") or {}):
        scores = (entry.get("datasets") or {}).get(dataset) or {}
        by_id = (contamination.get(dataset) or {}).get("by_id") or {}
        by_db = (contamination.get(dataset) or {}).get("by_database") or {}
        rows.append([f"`{dataset}`", scores.get("frames"),
                     *[_with_ci(scores.get(key), scores.get(f"{key}_ci"), factor) for key, _, factor in ZEROSHOT_COLUMNS],
                     by_id.get("fraction"), by_db.get("overlap") or NOT_COMPUTED])
    lines += md_table(["set", "frames", *[label for _, label, _ in ZEROSHOT_COLUMNS], "contamination by id (fraction)", "by database"], rows)
    ratio_rows = []
    for comparison, block in sorted((entry.get("ratios") or {}).items()):
        for metric, r in sorted((block or {}).items()):
            if isinstance(r, Mapping):
                ratio_rows.append([f"`{comparison}` / `{entry.get('seen_set')}`", metric, _with_ci(r.get("ratio"), r.get("ci"), 1.0)])
    if ratio_rows:
        lines += ["", "Unseen / seen error ratio [95% CI]:", "", *md_table(["sets", "metric", "ratio"], ratio_rows)]
    notes = [f"- `{d}`: {'; '.join(map(str, n))}" for d, n in sorted((entry.get("notes") or {}).items()) if n]
    if notes:
        lines += ["", "Energy conventions and level of theory, per set:", "", *notes]
    diatomics = entry.get("diatomics")
    if isinstance(diatomics, Mapping):
        lines += ["", "### Diatomic curves (PBE dimers, Matbench Discovery)", "",
                  *md_table(["figure", "value"], [[label, diatomics.get(key)] for key, label in DIATOMIC_LABELS.items()])]
    return lines + [""]


def phonon_lines(model: str, phonons: Mapping[str, Any]) -> list[str]:
    entry = (phonons.get("models") or {}).get(model)
    if not isinstance(entry, Mapping):
        return []
    lines = ["## Phonons vs DFT (phonopy)", "", f"From `{PHONONS}` (stage `phonons`); status {entry.get('status')}.", ""]
    rows = []
    for name, m in sorted((entry.get("materials") or {}).items()):
        if not isinstance(m, Mapping):
            continue
        imaginary = (m.get("imaginary_band") or {}).get("count")
        reference = (m.get("reference_imaginary_band") or {}).get("count")
        rows.append([name, m.get("theory_note") or m.get("failure") or "", *[m.get(key) for key, _ in PHONON_COLUMNS],
                     f"{imaginary} (DFT {reference})" if imaginary is not None else NOT_COMPUTED])
    lines += md_table(["material", "level of theory", *[label for _, label in PHONON_COLUMNS], "imaginary band points"], rows)
    median, like = entry.get("median") or {}, entry.get("like_with_like_median") or {}
    lines += ["", f"Median over materials: RMSE ω² {_number(median.get('rmse_omega2_THz2'))} THz² "
                  f"({_number(like.get('rmse_omega2_THz2'))} on the materials whose DFT shares the model's functional); "
                  f"imaginary modes on the model's q-mesh: {', '.join(entry.get('imaginary_materials') or []) or 'none'}.", ""]
    return lines


def md_lines(model: str, md: Mapping[str, Any]) -> list[str]:
    entry = (md.get("models") or {}).get(model)
    if not isinstance(entry, Mapping):
        return []
    params = md.get("params") or {}
    lines = ["## Molecular dynamics (Langevin)", "",
             f"From `{MD}` (stage `md`): {params.get('steps')} steps at {params.get('temperature_K')} K; "
             "σ⁽²⁾ anharmonicity against the DFT and the model's own force constants.", ""]
    rows = []
    for name, m in sorted((entry.get("materials") or {}).items()):
        if not isinstance(m, Mapping):
            continue
        s_dft, s_model = m.get("sigma_dft") or {}, m.get("sigma_model") or {}
        rows.append([name, "yes" if m.get("completed") else f"no: {m.get('failure')}", f"{m.get('steps_done')} of {m.get('steps_requested')}",
                     f"{_number(m.get('temperature_mean_K'))} ± {_number(m.get('temperature_std_K'))}",
                     m.get("drift_etot_eV_per_atom_per_ps"), f"{_number(s_dft.get('sigma_mean'))} ({s_dft.get('class')})",
                     f"{_number(s_model.get('sigma_mean'))} ({s_model.get('class')})",
                     (m.get("equilibration") or {}).get("equilibrated")])
    lines += md_table(["material", "completed", "steps", "T (K)", "E_tot drift (eV/atom/ps)", "σ⁽²⁾ with Φ_DFT", "σ⁽²⁾ with Φ_model",
                       "equilibrated"], rows)
    return lines + [""]


def _number(value: Any) -> str:
    return f"{value:.3g}" if is_number(value) else NOT_COMPUTED
