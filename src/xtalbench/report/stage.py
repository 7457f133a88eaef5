"""The report stage: per-dataset summaries, dataset cards and model cards.

Reads what the other stages wrote (shapes in docs/CONTRACTS.md) and tolerates missing pieces:
a file that is not there yet becomes "not computed" in a card. A file that is there but
malformed stops the stage with an error naming the file and the key.

In-distribution vs out-of-distribution: for the strategies listed in
`report.in_distribution_strategies` (default: `random`) the test role is in distribution; for
every other strategy (loco, element, spacegroup, forward) the test role is out of
distribution and the in-distribution reference is the same strategy's `val` role (a seeded
random part of the training side of the same fold, scored by the same model), or, when no val
role was scored, the model's `random` test score.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from xtalbench.core.errors import XtalbenchError
from xtalbench.governance.gates import flatten, is_number
from xtalbench.report.counts import fold_sizes, funnel

if TYPE_CHECKING:
    from xtalbench.report.model_results import BeyondSplits

DEFAULT_HEADLINE = (
    "energy_mae_meV_per_atom",
    "force_mae_meV_per_A",
    "stress_mae_GPa",
    "e_form_mae_meV_per_atom",
    "f1",
    "false_kill_rate",
    "daf",
)
NOT_COMPUTED = "not computed"
STAGE_FILES = ("fetch", "dedup", "featurize", "split", "train", "summary")


class ReportError(XtalbenchError, ValueError):
    """A malformed input; the message names the file and the key."""


@dataclass(frozen=True)
class ReportConfig:
    headline: tuple[str, ...] = DEFAULT_HEADLINE
    in_distribution_strategies: tuple[str, ...] = ("random",)
    models_dir: str = "models"
    reports_dir: str = "reports"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ReportConfig:
        block = params.get("report") or {}
        if not isinstance(block, Mapping):
            raise ReportError(f"params.yaml `report` must be a mapping, got {type(block).__name__}")
        return cls(
            headline=tuple(block.get("headline_metrics") or DEFAULT_HEADLINE),
            in_distribution_strategies=tuple(block.get("in_distribution_strategies") or ("random",)),
            models_dir=str(block.get("models_dir") or "models"),
            reports_dir=str(block.get("reports_dir") or "reports"),
        )


# --- reading -----------------------------------------------------------------------------------

def read_json(path: str | Path) -> Any | None:
    """Parsed JSON, or None when the file does not exist; malformed JSON names the file."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from err


def _expect(value: Any, kind: type | tuple[type, ...], path: Path | str, key: str) -> Any:
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ReportError(f"{path}: key {key!r} must be {names}, got {type(value).__name__}")
    return value


def validate_model_metrics(data: Any, path: Path | str) -> dict[str, Any]:
    """Check the shape of `metrics/<d>/<model>.json`; errors name the file and the key."""
    _expect(data, dict, path, "<top level>")
    _expect(data.get("model"), str, path, "model")
    strategies = _expect(data.get("strategies"), dict, path, "strategies")
    for name, block in strategies.items():
        _expect(block, dict, path, f"strategies.{name}")
        folds = _expect(block.get("folds", {}), dict, path, f"strategies.{name}.folds")
        for fold, roles in folds.items():
            _expect(roles, dict, path, f"strategies.{name}.folds.{fold}")
            for role, values in roles.items():
                _check_metric_block(values, path, f"strategies.{name}.folds.{fold}.{role}")
        mean = _expect(block.get("mean", {}), dict, path, f"strategies.{name}.mean")
        for role, values in mean.items():
            if isinstance(values, dict):
                _check_metric_block(values, path, f"strategies.{name}.mean.{role}")
    for key in ("gap", "throughput", "contamination"):
        if data.get(key) is not None:
            _expect(data[key], dict, path, key)
    return data


def _check_metric_block(values: Any, path: Path | str, key: str) -> None:
    _expect(values, dict, path, key)
    for metric, value in values.items():
        if value is not None and not isinstance(value, (int, float, dict, list, str)):
            raise ReportError(f"{path}: key {key}.{metric!r} must be a number or null, got {type(value).__name__}")


def model_metrics(metrics_dir: Path) -> dict[str, dict[str, Any]]:
    """{model: metrics} of every model metrics file in `metrics/<d>/` (files with `strategies`)."""
    found: dict[str, dict[str, Any]] = {}
    if not metrics_dir.is_dir():
        return found
    for path in sorted(metrics_dir.glob("*.json")):
        if path.stem in STAGE_FILES:
            continue
        data = read_json(path)
        if isinstance(data, dict) and "strategies" in data:
            data = validate_model_metrics(data, path)
            if data["model"] in found:
                raise ReportError(f"{path}: key 'model' = {data['model']!r} also appears in another file of {metrics_dir}")
            found[data["model"]] = data
    return found


def model_specs(models_dir: str | Path, display: str = "models") -> dict[str, dict[str, Any]]:
    """Model registry YAMLs (`models/*.yaml`) keyed by their `name` (or file stem);
    `_file` is `<display>/<file name>` (no absolute paths in the cards)."""
    specs: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(models_dir).glob("*.y*ml")):
        try:
            spec = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ReportError(f"{path}: malformed YAML: {err}") from err
        if not isinstance(spec, dict):
            raise ReportError(f"{path}: key '<top level>' must be a mapping, got {type(spec).__name__}")
        specs[str(spec.get("name") or path.stem)] = {**spec, "_file": f"{display}/{path.name}"}
    return specs


@dataclass
class DatasetInputs:
    """Everything the report reads for one dataset (None = not there yet)."""

    name: str
    root: Path = Path(".")
    data_version: dict | None = None
    fetch: dict | None = None
    dedup: dict | None = None
    split: dict | None = None
    featurize: dict | None = None
    split_card: dict | None = None
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, name: str, root: str | Path = ".") -> DatasetInputs:
        root = Path(root)
        metrics = root / "metrics" / name
        found = {
            "data_version": read_json(root / "datasets" / name / "DATA_VERSION.json"),
            "fetch": read_json(metrics / "fetch.json"),
            "dedup": read_json(metrics / "dedup.json"),
            "split": read_json(metrics / "split.json"),
            "featurize": read_json(metrics / "featurize.json"),
            "split_card": read_json(root / "splits" / name / "split_card.json"),
        }
        for key, value in found.items():
            if value is not None and not isinstance(value, dict):
                raise ReportError(f"{name} {key}: top level must be a JSON object, got {type(value).__name__}")
        return cls(name, root, models=model_metrics(metrics), **found)


# --- summary -----------------------------------------------------------------------------------

def role_means(block: Mapping[str, Any], role: str) -> dict[str, Any] | None:
    """Mean metrics over folds of one role of a strategy (`mean.<role>`), with `n` = rows
    scored over all folds and `std_<metric>` from `std.<role>`; None when the role was not scored."""
    values = (block.get("mean") or {}).get(role)
    if not isinstance(values, Mapping):
        return None
    out = dict(values)
    counts = [roles[role].get("n") for roles in (block.get("folds") or {}).values()
              if isinstance(roles, Mapping) and isinstance(roles.get(role), Mapping)]
    if "n" not in out and counts and all(is_number(c) for c in counts):
        out["n"] = int(sum(counts))
    std = (block.get("std") or {}).get(role)
    if isinstance(std, Mapping):
        out.update({f"std_{k}": v for k, v in std.items() if is_number(v)})
    return out


EXTRA_KEYS = ("n", "n_folds", "contamination_fraction")


def headline(values: Mapping[str, Any] | None, metrics: tuple[str, ...]) -> dict[str, Any] | None:
    """The headline metrics (and their std over folds) of a role, plus counts and contamination."""
    if values is None:
        return None
    picked = {m: values[m] for m in metrics if m in values}
    picked.update({f"std_{m}": values[f"std_{m}"] for m in metrics if f"std_{m}" in values})
    picked.update({k: values[k] for k in EXTRA_KEYS if k in values})
    return picked


def model_type(data: Mapping[str, Any], spec: Mapping[str, Any] | None = None) -> str:
    """zero-shot | trained here | fine-tuned, from the registry `kind` (else the metrics file's)."""
    kind = str((spec or {}).get("kind") or data.get("kind") or "")
    if "finetune" in kind or "fine-tune" in kind:
        return "fine-tuned"
    if kind.endswith("-trained") or kind == "trained":
        return "trained here"
    return "zero-shot"


def strategy_summary(strategy: str, block: Mapping[str, Any], random_block: Mapping[str, Any] | None,
                     config: ReportConfig, zero_shot: bool = False) -> dict[str, Any]:
    """In vs out of distribution for one model × strategy (see the module docstring). A zero-shot
    model never trained on the split, so its train/val roles mean nothing: its in-distribution
    reference is always the random split's test score."""
    if strategy in config.in_distribution_strategies:
        ind, source, ood = role_means(block, "test"), f"{strategy}.test", None
    else:
        ind, source = (None, None) if zero_shot else (role_means(block, "val"), f"{strategy}.val")
        if ind is None and random_block is not None:
            ind, source = role_means(random_block, "test"), "random.test"
        ood = role_means(block, "test")
    ind_h, ood_h = headline(ind, config.headline), headline(ood, config.headline)
    ratio = None
    if ind_h and ood_h:
        ratio = {m: ood_h[m] / ind_h[m] for m in config.headline
                 if is_number(ind_h.get(m)) and is_number(ood_h.get(m)) and ind_h[m] != 0}
    return {
        "in_distribution": ind_h,
        "in_distribution_source": source if ind_h is not None else None,
        "out_of_distribution": ood_h,
        "ood_over_id": ratio,
        "folds": len(block.get("folds") or {}),
    }


def summarize(inputs: DatasetInputs, config: ReportConfig) -> dict[str, Any]:
    """`metrics/<d>/summary.json`: headline metrics per model × strategy, ID beside OOD."""
    models = {}
    for name, data in sorted(inputs.models.items()):
        strategies = data["strategies"]
        random_block = next((strategies[s] for s in config.in_distribution_strategies if s in strategies), None)
        models[name] = {
            "type": model_type(data),
            "strategies": {s: strategy_summary(s, b, random_block, config, model_type(data) == "zero-shot")
                           for s, b in sorted(strategies.items())},
            "throughput": _numbers(data.get("throughput")),
        }
    counts = {stage: None if getattr(inputs, stage) is None else
              {k: v for k, v in flatten(getattr(inputs, stage)).items() if is_number(v)}
              for stage in ("fetch", "dedup", "split")}
    return {"dataset": inputs.name, "counts": counts, "models": models}


def _numbers(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Top-level numeric entries only (what belongs in a headline)."""
    if data is None:
        return None
    return {k: v for k, v in data.items() if is_number(v)}


# --- formatting --------------------------------------------------------------------------------

def fmt(value: Any) -> str:
    if value is None:
        return NOT_COMPUTED
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value) if value else "—"
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {fmt(v)}" for k, v in value.items()) or "—"
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c.replace("|", "\\|") for c in row) + " |"
              for row in rows]
    return lines


# --- dataset card ------------------------------------------------------------------------------

def split_folds(card: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """{strategy: {fold: figures}} from a split card, whatever its nesting of folds."""
    strategies = card.get("strategies", card)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for strategy, block in strategies.items():
        if not isinstance(block, Mapping):
            continue
        folds = block.get("folds", block)
        if isinstance(folds, list):
            folds = {str(f.get("fold", i)): f for i, f in enumerate(folds) if isinstance(f, Mapping)}
        if isinstance(folds, Mapping):
            out[strategy] = {str(k): v for k, v in folds.items() if isinstance(v, Mapping)}
    return out


def _fold_row(figures: Mapping[str, Any]) -> dict[str, Any]:
    """The headline figures of one fold of the split card (the full card: splits/<d>/split_card.md)."""
    flat = flatten(figures)

    def first(*suffixes: str) -> Any:
        for suffix in suffixes:
            for key, value in flat.items():
                if key == suffix or key.endswith("." + suffix):
                    return value
        return None

    def sizes(unit: str) -> str | None:
        got = [first(f"sizes.{r}.{unit}", f"sizes.{r}") for r in ("train", "val", "test")]
        return None if all(v is None for v in got) else " / ".join("—" if v is None else fmt(v) for v in got)

    def joined(key: str, sep: str) -> str | None:
        value = figures.get(key)
        if not isinstance(value, (list, tuple)):
            return None
        items = [str(v) for v in value]
        return sep.join(items[:12]) + (f" (+{len(items) - 12})" if len(items) > 12 else "") or "—"

    distance = [first(f"test_to_train_{q}") for q in ("median", "p95", "min")]
    row = {
        "materials train / val / test": sizes("materials"),
        "frames train / val / test": sizes("frames"),
        "OOD fraction (test outside training domain)": first("fraction_test_outside_domain", "ood_fraction"),
        "test→train distance median / p95 / min": None if all(d is None for d in distance)
        else " / ".join(fmt(d) for d in distance),
        "composition min distance": first("composition_min_distance"),
        "elements only in test": joined("elements_only_in_test", ", "),
        "flags": joined("flags", "; "),
    }
    return {k: v for k, v in row.items() if v is not None}


def dataset_card(inputs: DatasetInputs, summary: Mapping[str, Any]) -> str:
    dv = inputs.data_version or {}
    lines = [f"# Dataset card: `{inputs.name}`", "",
             "Generated by `xtalbench report` from DATA_VERSION.json, the stage metrics and the split card.", "",
             "## Source and version pin", ""]
    if inputs.data_version is None:
        lines.append(f"_DATA_VERSION.json: {NOT_COMPUTED} (run `dvc repro` or `dvc pull`)._")
    else:
        lines += md_table(["field", "value"], [
            ["source", dv.get("source")],
            ["source details", dv.get("source_details")],
            ["fetched at", dv.get("fetched_at")],
            ["limit", "none (every record)" if dv.get("limit") is None else dv["limit"]],
            ["inputs (sha256)", _sha_list(dv.get("inputs_sha256"))],
            ["outputs (sha256)", _sha_list(dv.get("outputs_sha256"))],
            ["packages", dv.get("packages")],
        ])
    lines += ["", "## Counts through the pipeline", ""]
    steps = funnel(inputs.fetch, inputs.dedup, inputs.featurize, inputs.split)
    lines += (md_table(["step", "frames", "materials", "removed", "why removed"],
                       [[r["step"], _dash(r["frames"]), _dash(r["materials"]), _dash(r["removed"]), r["why"] if r["removed"] else "—"]
                        for r in steps]) if steps else [f"_Stage metrics: {NOT_COMPUTED}._"])
    folds = fold_sizes(inputs.split)
    if folds:
        lines += ["", "Per fold (frames in train / val / test; all frames of a material on one side):", "",
                  *md_table(["strategy", "fold", "held out", "train", "val", "test"],
                            [[f"`{r['strategy']}`", r["fold"], r["name"], _dash(r["train"]), _dash(r["val"]), _dash(r["test"])]
                             for r in folds])]
    lines += _counts_check(inputs)
    lines += ["", "## Splits", ""]
    if inputs.split_card is None:
        lines += [f"_Split card: {NOT_COMPUTED}._", ""]
    else:
        card = inputs.split_card
        settings = {k: card.get(k) for k in ("distance_space", "domain_rule", "in_domain_flag", "seed") if k in card}
        leakage = card.get("leakage")
        if isinstance(leakage, Mapping) and leakage.get("dedup_threshold") is not None:
            settings["dedup threshold (leakage check)"] = leakage.get("dedup_threshold")
        if settings:
            lines += [f"- {k}: {fmt(v)}" for k, v in settings.items()] + [""]
        for strategy, folds in sorted(split_folds(card).items()):
            lines += [f"### `{strategy}`", ""]
            fold_rows = {fold: _fold_row(fig) for fold, fig in sorted(folds.items(), key=lambda kv: _fold_key(kv[0]))}
            columns = [c for c in FOLD_COLUMNS if any(c in r for r in fold_rows.values())]
            if not fold_rows:
                lines += ["_no folds_", ""]
                continue
            lines += md_table(["fold", *columns], [[fold, *[r.get(c) for c in columns]] for fold, r in fold_rows.items()])
            flagged = [fold for fold, r in fold_rows.items() if any(("flag" in c and r.get(c) not in (None, "—", False, 0, "")) for c in r)]
            lines += ["", f"Flagged folds: {', '.join(flagged) if flagged else 'none'}.", ""]
    lines += ["## Models evaluated on this dataset", ""]
    models = summary.get("models") or {}
    lines += [f"- [`{m}`]({m}_card.md)" for m in models] or [f"_none yet ({NOT_COMPUTED})._"]
    return "\n".join(lines).rstrip() + "\n"


def _dash(value: Any) -> str:
    return "—" if value is None else fmt(value)


def _counts_check(inputs: DatasetInputs) -> list[str]:
    """Say whether read = kept + quarantined (fetch) and read = kept + dropped (dedup) hold."""
    notes = []
    for stage, parts in (("fetch", ("kept", "quarantined")), ("dedup", ("kept", "dropped", "quarantined", "thinned"))):
        data = getattr(inputs, stage) or {}
        read = _frames(data.get("read"))
        values = {k: _frames(data.get(k)) for k in parts if _frames(data.get(k)) is not None}
        if read is None or "kept" not in values:
            continue
        ok = read == sum(values.values())
        unit = " frames" if isinstance(data.get("read"), Mapping) else ""
        notes.append(f"{stage}: read {read:,}{unit} = " + " + ".join(f"{k} {v:,}" for k, v in values.items())
                     + ("" if ok else " — **does not add up**"))
    return ["", *[f"- {n}" for n in notes]] if notes else []


def _frames(value: Any) -> int | None:
    """A count, either a number or the `frames` entry of a {frames, materials} dict."""
    if isinstance(value, Mapping):
        value = value.get("frames")
    return int(value) if is_number(value) else None


def _sha_list(data: Any) -> str:
    if not isinstance(data, Mapping) or not data:
        return NOT_COMPUTED
    return "; ".join(f"{k}: `{str(v)[:12]}…`" for k, v in data.items())


def _fold_key(fold: str) -> tuple[int, str]:
    return (int(fold), "") if fold.lstrip("-").isdigit() else (1 << 30, fold)


FOLD_COLUMNS = ("materials train / val / test", "frames train / val / test", "OOD fraction (test outside training domain)",
                "test→train distance median / p95 / min", "composition min distance", "elements only in test", "flags")


# --- model card --------------------------------------------------------------------------------

def model_card(model: str, spec: Mapping[str, Any] | None, per_dataset: Mapping[str, tuple[dict, dict]],
               config: ReportConfig, beyond: BeyondSplits | None = None) -> str:
    """`reports/<model>_card.md`; per_dataset = {dataset: (model metrics, summary of this model)};
    beyond: its zero-shot, diatomics and dynamics results (`report.model_results`)."""
    from xtalbench.report.model_results import BeyondSplits

    spec, beyond = spec or {}, beyond or BeyondSplits()
    lines = [f"# Model card: `{model}`", "", "Generated by `xtalbench report`.", "", "## Model", ""]
    if not spec:
        lines.append(f"_No registry entry in `{config.models_dir}/` for this model: details {NOT_COMPUTED}._")
    else:
        lines += md_table(["field", "value"], [[k, spec.get(k)] for k in
                                               ("name", "kind", "description", "checkpoint", "foundation", "licence", "url", "versions", "_file")
                                               if k in spec])
    lines += ["", "## Intended use", "", spec.get("intended_use") or _intended_use(spec), "",
              "## Training set and contamination", ""]
    training = spec.get("training_set")
    lines.append(f"Declared training set: {fmt(training) if training else NOT_COMPUTED}.")
    lines.append("")
    contamination_rows = []
    for dataset, (metrics, _) in sorted(per_dataset.items()):
        for key, value in sorted(_contamination(metrics).items()):
            contamination_rows.append([dataset, f"`{key}`", value])
        for strategy, s in sorted((per_dataset[dataset][1].get("strategies") or {}).items()):
            fraction = (s.get("out_of_distribution") or s.get("in_distribution") or {}).get("contamination_fraction")
            if fraction is not None:
                contamination_rows.append([dataset, f"`{strategy}` test, mean over folds", fraction])
    lines += (md_table(["dataset", "contamination", "value"], contamination_rows) if contamination_rows
              else [f"_Contamination on the root datasets: {NOT_COMPUTED}"
                    + (" (the zero-shot table gives it per set)._" if beyond.lines else "._")])
    zero_shot = all(s.get("type", "zero-shot") == "zero-shot" for _, s in per_dataset.values())
    reference = ("This is a zero-shot model: it never trained on these splits, so their train/val roles mean nothing "
                 "for it; ID is the `random` split's test score for every strategy, OOD each strategy's held-out test role. "
                 if zero_shot else "ID is the strategy's `val` role (or the `random` test score), OOD its held-out `test` role; ")
    lines += ["", "## Metrics: in distribution (ID) beside out of distribution (OOD)", ""]
    if not per_dataset:
        lines += [f"_{NOT_COMPUTED}: not evaluated on the root datasets' splits (params `evaluate.models`)._", ""]
    else:
        lines += [reference + "for `" + ", ".join(config.in_distribution_strategies) + "` the test role is itself in distribution. "
                  "Means over folds; n = scored rows.", ""]
    for dataset, (metrics, summary) in sorted(per_dataset.items()):
        lines += [f"### `{dataset}`", ""]
        rows = []
        for strategy, s in sorted((summary.get("strategies") or {}).items()):
            ind, ood, ratio = s.get("in_distribution") or {}, s.get("out_of_distribution"), s.get("ood_over_id") or {}
            metric_names = [m for m in config.headline if is_number(ind.get(m)) or is_number((ood or {}).get(m))]
            notes = metrics.get("notes") or {}
            for m in metric_names:
                rows.append([f"`{strategy}`", m, _pm(ind, m, notes), _pm(ood, m, notes) if ood else "— (ID strategy)",
                             ratio.get(m) if ood else "—", ind.get("n"), ood.get("n") if ood else "—"])
        lines += (md_table(["strategy", "metric", "ID", "OOD", "OOD/ID", "n ID", "n OOD"], rows) if rows
                  else [f"_Metrics: {NOT_COMPUTED}._"])
        lines += _fold_tables(metrics, config)
        notes = {k: v for k, v in (metrics.get("notes") or {}).items() if isinstance(v, str)}
        if notes:
            lines += ["", "Metrics not computed, and why:", "", *[f"- `{k}`: {v}" for k, v in sorted(notes.items())]]
        gap = flatten(metrics.get("gap"))
        if gap:
            lines += ["", "Gap (OOD vs random, with bootstrap CIs):", "", *md_table(["key", "value"], [[f"`{k}`", v] for k, v in gap.items()])]
        lines.append("")
    lines += beyond.lines
    lines += ["## Throughput and hardware", ""]
    tp_rows = [[d, f"`{k}`", v] for d, (m, _) in sorted(per_dataset.items()) for k, v in flatten(m.get("throughput")).items()]
    tp_rows += beyond.throughput
    lines += md_table(["dataset", "key", "value"], tp_rows) if tp_rows else [f"_Throughput: {NOT_COMPUTED}._"]
    limitations = _limitations(spec, per_dataset, beyond.limitations)
    lines += ["", "## Known limitations", "", *[f"- {item}" for item in limitations]]
    return "\n".join(lines).rstrip() + "\n"


def _fold_tables(metrics: Mapping[str, Any], config: ReportConfig) -> list[str]:
    """Per-fold test scores of the OOD strategies (fold-level spread hides behind means)."""
    lines: list[str] = []
    for strategy, block in sorted(metrics["strategies"].items()):
        if strategy in config.in_distribution_strategies:
            continue
        folds = block.get("folds") or {}
        rows = []
        for fold, roles in sorted(folds.items(), key=lambda kv: _fold_key(str(kv[0]))):
            test = roles.get("test") or {}
            rows.append([fold, test.get("n"), *[test.get(m) for m in config.headline]])
        keep = [i for i, m in enumerate(config.headline) if any(r[2 + i] is not None for r in rows)]
        if rows and keep:
            lines += ["", f"Per fold, `{strategy}` test (OOD):", "",
                      *md_table(["fold", "n", *[config.headline[i] for i in keep]],
                                [[r[0], r[1], *[r[2 + i] for i in keep]] for r in rows])]
    return lines


def _pm(values: Mapping[str, Any] | None, metric: str, notes: Mapping[str, Any]) -> str:
    """`mean ± std` over folds, or why it is missing."""
    value = (values or {}).get(metric)
    if not is_number(value):
        return NOT_COMPUTED + (f" ({notes[metric]})" if isinstance(notes.get(metric), str) else "")
    std = (values or {}).get(f"std_{metric}")
    return f"{value:.4g} ± {std:.2g}" if is_number(std) and std > 0 else f"{value:.4g}"


def _contamination(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Pooled contamination figures (the per-fold subtree is summarised per strategy instead)."""
    block = metrics.get("contamination")
    if not isinstance(block, Mapping):
        return {}
    return flatten({k: v for k, v in block.items() if k != "strategies"})


def _intended_use(spec: Mapping[str, Any]) -> str:
    kind = spec.get("kind")
    if kind is None:
        return f"_{NOT_COMPUTED}: no `intended_use` or `kind` in the model registry._"
    text = {
        "mace-foundation": "A general-purpose MACE foundation potential for energies, forces and stresses across the periodic table.",
        "mace-file": "A MACE potential loaded from a model file; valid for the chemistry and configurations it was trained on.",
        "mace-trained": "A small MACE trained by this pipeline on one split fold, to measure how error grows out of distribution; "
                        "a benchmark probe, not a production potential.",
        "chgnet": "CHGNet, a universal potential (energies, forces, stresses, magnetic moments) pretrained on MPtrj.",
        "sevennet": "SevenNet, a universal equivariant potential (energies, forces, stresses); its training set is in the YAML.",
        "matgl": "A matgl universal potential (M3GNet or TensorNet: energies, forces, stresses); its training set and level "
                 "of theory are in the YAML.",
    }.get(str(kind), f"An ASE calculator of kind `{kind}`.")
    return text + " Benchmarked here for energy, force, stress and stability-screening accuracy in and out of distribution."


def _limitations(spec: Mapping[str, Any], per_dataset: Mapping[str, tuple[dict, dict]], more: list[str] | None = None) -> list[str]:
    items = [str(x) for x in (spec.get("limitations") or [])] if isinstance(spec.get("limitations"), list) else (
        [str(spec["limitations"])] if spec.get("limitations") else [])
    if spec.get("known_issues"):
        items.append(f"Known issues (its YAML): {spec['known_issues']}")
    items += more or []
    for dataset, (metrics, summary) in sorted(per_dataset.items()):
        for strategy, s in sorted((summary.get("strategies") or {}).items()):
            for metric, ratio in sorted((s.get("ood_over_id") or {}).items()):
                if metric.endswith(("_mae_meV_per_atom", "_mae_meV_per_A", "_mae_GPa")) and ratio >= 1.5:
                    items.append(f"`{dataset}`/`{strategy}`: {metric} is {ratio:.2g}× higher out of distribution than in.")
        contamination = _contamination(metrics)
        leaked = {k: v for k, v in contamination.items() if is_number(v) and v > 0 and "fraction" in k}
        if leaked:
            worst = max(leaked, key=lambda k: leaked[k])
            items.append(f"`{dataset}`: up to {leaked[worst]:.1%} of test materials may be in the training set "
                         f"(`{worst}`); its scores there are optimistic.")
    if not items:
        items.append("None recorded beyond what the metrics above show; scores hold only for the datasets listed.")
    return items


# --- the stage ---------------------------------------------------------------------------------

def write_text(path: Path, text: str) -> Path:
    """Write a card atomically (a temporary renamed into place): never a half-written card."""
    from xtalbench.core.io import atomic_path

    with atomic_path(path) as temp:
        temp.write_text(text)
    return path


def build_reports(datasets: list[str], params: Mapping[str, Any], root: str | Path = ".", site: bool = True) -> dict[str, Any]:
    """Run the whole report stage; returns what it wrote and the gate results.

    Writes `metrics/<d>/summary.json` and `reports/<d>_card.md` per dataset, then
    `reports/<model>_card.md` per evaluated model (over all datasets), then
    `reports/governance.md` (gates evaluated on the metrics files, summaries included), its
    per-metric detail `reports/governance_detail.md`, and the static site `reports/site/`.
    """
    from xtalbench.core.project import write_json
    from xtalbench.governance.gates import (
        collect_metrics,
        evaluate,
        governance_detail_markdown,
        governance_markdown,
        parse_gates,
    )

    root = Path(root)
    config = ReportConfig.from_params(params)
    gates = parse_gates(params)
    reports = root / config.reports_dir
    specs = model_specs(root / config.models_dir, config.models_dir)
    written: list[Path] = []
    per_model: dict[str, dict[str, tuple[dict, dict]]] = {}
    loaded: dict[str, DatasetInputs] = {}
    for name in datasets:
        inputs = loaded[name] = DatasetInputs.load(name, root)
        summary = summarize(inputs, config)
        written.append(write_json(summary, root / "metrics" / name / "summary.json"))
        written.append(write_text(reports / f"{name}_card.md", dataset_card(inputs, summary)))
        for model, metrics in inputs.models.items():
            per_model.setdefault(model, {})[name] = (metrics, summary["models"][model])
    from xtalbench.report.model_results import StageResults, beyond_splits

    stage_results = StageResults.load(root)
    for model in sorted(set(per_model) | stage_results.model_names()):
        card = model_card(model, specs.get(model), per_model.get(model, {}), config, beyond_splits(model, stage_results))
        written.append(write_text(reports / f"{_safe(model)}_card.md", card))
    written += finetune_cards(datasets, root, reports)
    board = root / "metrics" / "zeroshot" / "leaderboard.md"  # the leaderboard stage's table, beside the cards
    if board.exists():
        written.append(write_text(reports / "leaderboard.md", board.read_text()))
    results = evaluate(gates, collect_metrics(gates, root))
    written.append(write_text(reports / "governance.md", governance_markdown(results)))
    written.append(write_text(reports / "governance_detail.md", governance_detail_markdown(results)))
    if site:
        from xtalbench.report.site import build_site

        files = build_site(root, params, config, results, loaded, specs)
        written.append(reports / "site" / "index.html")
        print(f"site: {len(files)} files under {reports / 'site'}")
    return {"written": written, "results": results}


def finetune_cards(datasets: list[str], root: Path, reports: Path) -> list[Path]:
    """`reports/finetune-<model>_card.md`: each dataset's fine-tuning section and governance table."""
    from xtalbench.finetune.card import render

    sections: dict[str, list[str]] = {}
    for name in datasets:
        for path in sorted((root / "metrics" / name).glob("finetune-*.json")):
            data = read_json(path)
            if isinstance(data, dict) and "folds" in data:
                sections.setdefault(path.stem, []).append(f"# Dataset `{name}`\n\n" + render(data, path.relative_to(root).as_posix()))
    written = []
    for model, parts in sorted(sections.items()):
        text = f"# Model card: `{model}`\n\nGenerated by `xtalbench report` from the finetune stage's metrics.\n\n" + "\n".join(parts)
        written.append(write_text(reports / f"{_safe(model)}_card.md", text))
    return written


def _safe(name: str) -> str:
    """A model name as a file name (no path separators)."""
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)
