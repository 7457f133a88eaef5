"""The fine-tuned model's card section (Markdown) from `metrics/<d>/finetune-<model>.json`.

`report` calls `render` for every finetune metrics file; every number comes from that file.
"""

from __future__ import annotations

from typing import Any


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)) and len(value) == 2:  # a CI; None = unbounded (e.g. never reached)
        return "[" + ", ".join("∞" if v is None else f"{v:.{digits}g}" for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _mae(block: dict[str, Any] | None, key: str = "e_form_mae_meV_per_atom") -> str:
    if not block or block.get(key) is None:
        return "—"
    ci = block.get(key.replace("_mae_", "_mae_ci95_")) if "_mae_" in key else block.get(key.replace("mae_", "mae_ci95_", 1))
    return f"{block[key]:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "")


def governance_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| check | fold | threshold | value | status |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['check']} | {r['fold']} | {r['op']} {_num(r['threshold'])} | {_num(r['value'])} | **{r['status']}** |")
    return lines


def render(metrics: dict[str, Any], source: str) -> str:
    """Markdown: method, ID vs LOCO side by side with CIs, intervals, learning curve, governance."""
    lines = [f"## Fine-tuned: {metrics.get('model')} (`{source}`)", "", f"Method: {metrics.get('method')}.", ""]
    lines += [(f"Ensemble of {metrics.get('members')} members; split-conformal intervals at {_num(metrics.get('coverage_target'))} coverage "
              "calibrated on half of each fold's val role (the other half early-stops).")]
    if metrics.get("e_hull_method"):
        lines += [f"E_hull of a prediction: {metrics['e_hull_method']}; stable ⇔ E_hull ≤ {metrics.get('stability_threshold')} eV/atom.", ""]
    comparison = metrics.get("comparison") or []
    if comparison:
        lines += ["", "| fold | kind | zero-shot MAE | fine-tuned MAE | from scratch MAE | ρ zero-shot | ρ fine-tuned | coverage |", "|---|---|---|---|---|---|---|---|"]
        for c in comparison:
            scratch = c.get("from_scratch") or {}
            kind = "in distribution" if c.get("in_distribution") else "OOD"
            lines.append(
                f"| {c['strategy']}-{c['fold']} | {kind} | {_mae(c['zero_shot'])} | {_mae(c['finetuned'])} | "
                f"{_num(scratch.get('e_form_mae_meV_per_atom'), 4)} | {_num(c['zero_shot'].get('spearman_rho'))} | "
                f"{_num(c['finetuned'].get('spearman_rho'))} | {_num(c['finetuned'].get('coverage'))} |"
            )
        lines += ["", "E_form MAE in meV/atom with material-bootstrap 95% CIs; ρ: Spearman of predicted vs MP E_hull on the test role."]
    else:  # frame datasets: energies, forces, stresses
        lines += ["", "| fold | role | kind | energy MAE (meV/atom) | force MAE (meV/Å) | stress MAE (GPa) | coverage |", "|---|---|---|---|---|---|---|"]
        for key, fold in (metrics.get("folds") or {}).items():
            for role in ("val", "test"):
                for kind in ("zero_shot", "finetuned"):
                    b = fold.get(role, {}).get(kind) or {}
                    lines.append(f"| {key} | {role} | {kind.replace('_', '-')} | {_mae(b, 'energy_mae_meV_per_atom')} | "
                                 f"{_mae(b, 'force_mae_meV_per_A')} | {_num(b.get('stress_mae_GPa'))} | {_num(b.get('coverage'))} |")
    curve = metrics.get("learning_curve")
    if curve and curve.get("fit"):
        fit, ci = curve["fit"], curve.get("ci95", {})
        if curve.get("target_met_at_smallest_size"):
            target = f"target {curve.get('target_mae')} {curve.get('unit', '')} already met at the smallest size"
        else:
            target = f"N for {curve.get('target_mae')} {curve.get('unit', '')}: {_num(curve.get('n_for_target'), 4)} (95% CI {_num(ci.get('n_target'))})"
        lines += ["", (f"Learning curve ({curve['strategy']}-{curve['fold']}): MAE = A·N^−α + B with α = {fit['alpha']:.3f} "
                  f"(95% CI {_num(ci.get('alpha'))}), A = {fit['A']:.3g}, B = {fit['B']:.3g} {curve.get('unit', '')}; {target}. "
                  f"Sizes {curve['sizes']}{' (capped by the fold)' if curve.get('capped_by_fold') else ''}.")]
    novelty = [(key, fold["test"]["error_vs_novelty"]) for key, fold in (metrics.get("folds") or {}).items() if fold.get("test", {}).get("error_vs_novelty")]
    if novelty:
        lines += ["", ("Error against novelty (distance to the nearest training material, standardised SOAP; test role): "
                  "least vs most novel quantile bin."), "", "| fold | MAE least novel | MAE most novel | coverage least novel | coverage most novel |", "|---|---|---|---|---|"]
        for key, bins in novelty:
            lo, hi = bins[0], bins[-1]
            lines.append(f"| {key} | {_mae(lo, 'mae_meV_per_atom')} | {_mae(hi, 'mae_meV_per_atom')} | {_num(lo.get('coverage'))} | {_num(hi.get('coverage'))} |")
    if metrics.get("governance"):
        lines += ["", "### Governance (the card's checks, test role of each fold)", ""] + governance_table(metrics["governance"])
    return "\n".join(lines) + "\n"
