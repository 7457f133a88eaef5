"""The static results site (`reports/site/`): plain HTML files that open from disk.

Everything on it is read from the files the pipeline wrote — `metrics/**/*.json` (the DVC
metrics), `plots/` and the model registry — never computed a second time. Metric files are
discovered generically: model metrics (`model` + `strategies`) fill the leaderboards and model
pages, the stage metrics (fetch, dedup, featurize, split) the dataset pages, and any other file
(new kinds landing from other stages) gets a fallback table. Every number links to its source:
a page per metrics file with one anchored row per flattened key, beside a copy of the raw JSON.

Layout: `index.html` (leaderboards, other results, governance summary), `models/<m>.html`,
`datasets/<d>.html`, `sources/<file>.html`, `data/<metrics path>` (raw copies),
`figures/*.png` (static fallbacks), `static/` (plotly.min.js from the `plotly` package, CSS, JS).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from xtalbench.governance.gates import FAIL, TRACKED, GateResult, group_of, is_number
from xtalbench.report import figures as figs
from xtalbench.report.counts import fold_sizes, funnel
from xtalbench.report.stage import (
    STAGE_FILES,
    DatasetInputs,
    ReportConfig,
    ReportError,
    _limitations,
    _safe,
    model_type,
    read_json,
    validate_model_metrics,
)

HERE = Path(__file__).parent
SITE_DIR = "site"


@dataclass(frozen=True)
class Task:
    slug: str
    title: str
    metrics: tuple[str, ...]


TASKS = (
    Task("efs", "Energies, forces and stresses", ("energy_mae_meV_per_atom", "force_mae_meV_per_A", "stress_mae_GPa", "force_cosine")),
    Task("eform", "Formation energy", ("e_form_mae_meV_per_atom",)),
    Task("stability", "Stability screening", ("f1", "daf", "false_kill_rate")),
)
HIGHER_IS_BETTER = {"f1", "daf", "force_cosine", "precision", "recall", "accuracy"}
LABELS = {
    "energy_mae_meV_per_atom": "energy MAE (meV/atom)", "force_mae_meV_per_A": "force MAE (meV/Å)",
    "stress_mae_GPa": "stress MAE (GPa)", "force_cosine": "force cosine", "e_form_mae_meV_per_atom": "E_form MAE (meV/atom)",
    "f1": "F1", "daf": "DAF", "false_kill_rate": "false-kill rate",
    "force_mae_vector_norm_meV_per_A": "force MAE, vector norm (meV/Å)", "force_mae_component_meV_per_A": "force MAE, per component (meV/Å)",
}
MAX_FALLBACK_ROWS = 200


# --- discovery ---------------------------------------------------------------------------------

@dataclass
class MetricFile:
    """One `metrics/**/*.json` file: its path from the repository root, contents and kind."""

    path: str
    data: Any
    kind: str  # model | fetch | dedup | featurize | split | train | summary | other

    @property
    def group(self) -> str:
        """The folders between `metrics/` and the file (the dataset for `metrics/<d>/x.json`)."""
        return "/".join(Path(self.path).parts[1:-1])

    @property
    def stem(self) -> str:
        return Path(self.path).stem

    @property
    def slug(self) -> str:
        return _safe(self.path.replace("/", "__"))

    def href(self, key: str | None = None) -> str:
        """Site-root-relative link to the source page (and row) of `key`."""
        return f"sources/{self.slug}.html" + (f"#{key}" if key else "")

    def value(self, key: str) -> Any:
        node = self.data
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return node


def discover(root: Path) -> list[MetricFile]:
    """Every metrics file under `root/metrics`, sorted by path, with its kind."""
    found = []
    for path in sorted((root / "metrics").rglob("*.json")):
        rel = path.relative_to(root).as_posix()
        data = read_json(path)
        kind = "other"
        if isinstance(data, dict) and isinstance(data.get("model"), str) and isinstance(data.get("strategies"), dict):
            try:
                validate_model_metrics(data, rel)
                kind = "model"
            except ReportError:
                kind = "other"  # a new shape from another stage: shown as a table, not ranked
        elif path.stem in STAGE_FILES and len(path.relative_to(root / "metrics").parts) == 2:
            kind = path.stem
        elif isinstance(data, dict) and isinstance(data.get("model"), str) and isinstance(data.get("folds"), dict) and data["folds"] \
                and all(isinstance((v or {}).get("test"), dict) and isinstance(v["test"].get("finetuned"), dict)
                        for v in data["folds"].values()):
            kind = "finetune"  # fine-tuned per fold: zero-shot beside fine-tuned test scores
        elif isinstance(data, dict) and isinstance(data.get("models"), dict) and data["models"] \
                and all(isinstance(v, dict) for v in data["models"].values()):
            kind = "by-model"  # one block per model (phonons, MD, …): a leaderboard of its numeric leaves
        found.append(MetricFile(rel, data, kind))
    return found


def leaves(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every leaf of a JSON document as (dotted key, value); lists are leaves (as JSON)."""
    out: list[tuple[str, Any]] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, Mapping) and value:
                out += leaves(value, name)
            else:
                out.append((name, value))
    elif prefix == "":
        out.append(("<top level>", data))
    return out


# --- cells and tables ----------------------------------------------------------------------------

@dataclass
class Cell:
    text: str
    value: Any = None          # what sorting uses (data-value); None sorts last
    href: str | None = None    # site-root-relative
    title: str = ""
    css: str = ""
    key: str = ""              # the metrics-file key of a linked number (data-key)


def fmt_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        text = json.dumps(value)
        return text if len(text) <= 120 else text[:117] + "…"
    return str(value)


def metric_cell(file: MetricFile, key: str) -> Cell:
    """A number from a metrics file, linked to its row on the file's source page."""
    value = file.value(key)
    if not is_number(value):
        note = (file.data.get("notes") or {}).get(key.rsplit(".", 1)[-1]) if isinstance(file.data, Mapping) else None
        return Cell("n/a" if isinstance(note, str) else "—", None, None, note if isinstance(note, str) else "not computed", "missing", key)
    return Cell(fmt_value(value), value, file.href(key), f"{file.path} · {key}", "num", key)


def data_value(value: Any) -> str:
    """The `data-value` attribute: exact JSON number, or text; '' for missing."""
    if value is None:
        return ""
    return json.dumps(value) if is_number(value) else str(value)


# --- leaderboards --------------------------------------------------------------------------------

def leaderboards(files: list[MetricFile], specs: Mapping[str, Mapping[str, Any]], config: ReportConfig) -> list[dict[str, Any]]:
    """Per group (dataset) and task: one sortable table, models as rows, ID beside OOD test scores."""
    boards = []
    groups: dict[str, list[MetricFile]] = {}
    for f in files:
        if f.kind == "model":
            groups.setdefault(f.group, []).append(f)
    for group, models in sorted(groups.items()):
        strategies = sorted({s for f in models for s in f.data["strategies"]})
        ind = next((s for s in config.in_distribution_strategies if s in strategies), None)
        ood = "loco" if "loco" in strategies else next((s for s in strategies if s != ind), None)
        for task in TASKS:
            columns = []
            for metric in task.metrics:
                for strategy, role in ((ind, "ID"), (ood, "OOD")):
                    key = f"strategies.{strategy}.mean.test.{metric}"
                    if strategy and any(is_number(f.value(key)) for f in models):
                        columns.append({"metric": metric, "strategy": strategy, "key": key,
                                        "label": f"{LABELS.get(metric, metric)} · {strategy} test ({role})",
                                        "better": "higher" if metric in HIGHER_IS_BETTER else "lower"})
            if not columns:
                continue
            rows = []
            for f in sorted(models, key=lambda m: m.data["model"]):
                name = f.data["model"]
                rows.append({"model": name, "cells": [
                    Cell(name, name, f"models/{_safe(name)}.html", f"model card of {name}", "model"),
                    Cell(model_type(f.data, specs.get(name)), model_type(f.data, specs.get(name))),
                    metric_cell(f, "contamination.fraction"),
                    *[metric_cell(f, c["key"]) for c in columns]], "file": f.path})
            boards.append({"id": f"lb-{_safe(group)}-{task.slug}", "group": group, "task": task.title, "page": None,
                           "columns": [{"label": "model", "better": "", "key": ""}, {"label": "type", "better": "", "key": ""},
                                       {"label": "test seen in training (fraction)", "better": "lower",
                                        "key": "contamination.fraction"}, *columns],
                           "rows": rows, "ind": ind, "ood": ood})
    return boards


MAX_BY_MODEL_COLUMNS = 12


def by_model_columns(f: MetricFile) -> list[str]:
    """Numeric leaves of a by-model file's model blocks, leaving out per-material detail."""
    keys: dict[str, None] = {}
    for block in f.data["models"].values():
        for key, value in leaves(block):
            if is_number(value) and "materials" not in key.split("."):
                keys.setdefault(key)
    return list(keys)[:MAX_BY_MODEL_COLUMNS]


SEEN_UNSEEN_METRICS = ("energy_mae_meV_per_atom", "force_mae_vector_norm_meV_per_A", "force_mae_component_meV_per_A", "stress_mae_GPa")


def seen_unseen_boards(f: MetricFile) -> list[dict[str, Any]]:
    """Zero-shot leaderboard files (`models.<m>.datasets.<d>.<metric>`, `seen_set`, `ratios`):
    per metric, models as rows, one column per dataset (the model's seen set marked) and the
    pooled unseen/seen ratio."""
    models = f.data["models"]
    datasets = f.data.get("datasets") if isinstance(f.data.get("datasets"), list) else \
        sorted({d for block in models.values() for d in block["datasets"]})
    boards = []
    for metric in SEEN_UNSEEN_METRICS:
        columns = [{"label": f"{d} · {LABELS.get(metric, metric)}", "key": f"models.*.datasets.{d}.{metric}", "better": "lower"}
                   for d in datasets if any(is_number(f.value(f"models.{m}.datasets.{d}.{metric}")) for m in models)]
        if not columns:
            continue
        ratio = f"ratios.all_unseen.{metric}.ratio"
        if any(is_number(f.value(f"models.{m}.{ratio}")) for m in models):
            columns.append({"label": "unseen / seen MAE (pooled)", "key": f"models.*.{ratio}", "better": "lower"})
        rows = []
        for name in sorted(models):
            block = models[name]
            seen = str(block.get("seen_set") or "—") + ("" if block.get("seen_is_training_set", True) else " (not its training set)")
            status = block.get("status") or {"status": "ok"}
            label = name if status["status"] == "ok" else f"{name} ⚠ {status['status']}"
            cells = [Cell(label, name, f"models/{_safe(name)}.html", str(status.get("known_issues") or f"model card of {name}"), "model"),
                     Cell(seen, seen, None, str(block.get("seen_note") or ""))]
            for c in columns:
                cell = metric_cell(f, c["key"].replace("models.*", f"models.{name}"))
                ci = f.value(cell.key + "_ci") if cell.key.endswith(metric) else f.value(cell.key.rsplit(".", 1)[0] + ".ci")
                if cell.value is not None and isinstance(ci, list) and len(ci) == 2 and all(is_number(x) for x in ci):
                    cell.text += f" [{ci[0]:.3g}, {ci[1]:.3g}]"
                if f".datasets.{block.get('seen_set')}." in c["key"]:
                    cell.css += " seen"
                    cell.title += " (seen: inside the training set)"
                cells.append(cell)
            rows.append({"model": name, "file": f.path, "cells": cells})
        boards.append({"id": f"lb-{f.slug}-{_safe(metric)}", "group": f"zero-shot ({f.group})", "page": f"results/{f.slug}.html",
                       "task": f"Seen vs unseen: {LABELS.get(metric, metric)}",
                       "columns": [{"label": "model", "better": "", "key": ""}, {"label": "seen set", "better": "", "key": ""}, *columns],
                       "rows": rows, "ind": None, "ood": None})
    return boards


FINETUNE_COLUMNS = (("zero_shot", "e_form_mae_meV_per_atom", "zero-shot E_form MAE (meV/atom)", "lower"),
                    ("finetuned", "e_form_mae_meV_per_atom", "fine-tuned E_form MAE (meV/atom)", "lower"),
                    ("zero_shot", "energy_mae_meV_per_atom", "zero-shot energy MAE (meV/atom)", "lower"),
                    ("finetuned", "energy_mae_meV_per_atom", "fine-tuned energy MAE (meV/atom)", "lower"),
                    ("zero_shot", "force_mae_meV_per_A", "zero-shot force MAE (meV/Å)", "lower"),
                    ("finetuned", "force_mae_meV_per_A", "fine-tuned force MAE (meV/Å)", "lower"),
                    ("finetuned", "spearman_rho", "fine-tuned Spearman ρ", "higher"),
                    ("finetuned", "coverage", "interval coverage", ""),
                    ("finetuned", "false_kill_rate", "fine-tuned false-kill rate", "lower"))


def with_ci(f: MetricFile, cell: Cell) -> Cell:
    """Append the 95% CI a file gives beside a MAE (`…_mae_ci95_…` next to `…_mae_…`)."""
    head, _, metric = cell.key.rpartition(".")
    ci = f.value(f"{head}.{metric.replace('_mae_', '_mae_ci95_', 1)}") if "_mae_" in metric else None
    if cell.value is not None and isinstance(ci, list) and len(ci) == 2 and all(is_number(x) for x in ci):
        cell.text += f" [{ci[0]:.3g}, {ci[1]:.3g}]"
    return cell


def finetune_boards(files: list[MetricFile], config: ReportConfig) -> list[dict[str, Any]]:
    """Fine-tuned: ID vs LOCO — per group, one row per model × fold (`<strategy>-<fold>`),
    zero-shot beside fine-tuned test scores."""
    groups: dict[str, list[MetricFile]] = {}
    for f in files:
        if f.kind == "finetune":
            groups.setdefault(f.group, []).append(f)
    boards = []
    for group, items in sorted(groups.items()):
        columns = [{"label": label, "key": "", "better": better, "path": (who, metric)} for who, metric, label, better in FINETUNE_COLUMNS
                   if any(is_number(f.value(f"folds.{k}.test.{who}.{metric}")) for f in items for k in f.data["folds"])]
        rows = []
        for f in sorted(items, key=lambda x: x.data["model"]):
            name = f.data["model"]
            for fold in sorted(f.data["folds"], key=lambda k: (k.split("-")[0] not in config.in_distribution_strategies, k)):
                role = "ID" if fold.split("-")[0] in config.in_distribution_strategies else "OOD"
                rows.append({"model": name, "file": f.path, "cells": [
                    Cell(name, name, f"models/{_safe(name)}.html", f"model card of {name}", "model"),
                    Cell(fold, fold), Cell(role, role),
                    *[with_ci(f, metric_cell(f, f"folds.{fold}.test.{c['path'][0]}.{c['path'][1]}")) for c in columns]]})
        boards.append({"id": f"lb-{_safe(group)}-finetune", "group": group, "task": "Fine-tuned: ID vs LOCO", "page": None,
                       "columns": [{"label": "model", "better": "", "key": ""}, {"label": "fold", "better": "", "key": ""},
                                   {"label": "role", "better": "", "key": ""}, *columns],
                       "rows": rows, "ind": None, "ood": None})
    return boards


def is_seen_unseen(f: MetricFile) -> bool:
    return all(isinstance(b.get("datasets"), Mapping) and all(isinstance(v, Mapping) for v in b["datasets"].values())
               for b in f.data["models"].values())


def by_model_boards(files: list[MetricFile]) -> list[dict[str, Any]]:
    """A leaderboard per by-model file (phonons, MD as they land): models as rows."""
    boards = []
    for f in files:
        if f.kind != "by-model":
            continue
        if is_seen_unseen(f):
            boards += seen_unseen_boards(f)
            continue
        columns = by_model_columns(f)
        rows = []
        for name in sorted(f.data["models"]):
            rows.append({"model": name, "file": f.path, "cells": [
                Cell(name, name, f"models/{_safe(name)}.html", f"model card of {name}", "model"),
                *[metric_cell(f, f"models.{name}.{c}") for c in columns]]})
        boards.append({"id": f"lb-{f.slug}", "group": f.group or "results", "task": f"{f.stem} ({f.path})", "page": f"results/{f.slug}.html",
                       "columns": [{"label": "model", "better": "", "key": ""},
                                   *[{"label": wrap(c), "key": f"models.*.{c}", "better": _better(c)} for c in columns]],
                       "rows": rows, "ind": None, "ood": None})
    return boards


def wrap(key: str) -> str:
    """A dotted key that may break after its dots and underscores (zero-width spaces)."""
    return key.replace(".", ".\u200b").replace("_", "_\u200b")


def _better(key: str) -> str:
    name = key.rsplit(".", 1)[-1]
    if any(t in name for t in ("mae", "rmse", "error", "seconds", "drift", "imaginary")):
        return "lower"
    return "higher" if name in HIGHER_IS_BETTER else ""


def fallback_tables(files: list[MetricFile]) -> list[dict[str, Any]]:
    """Files of kinds the site does not know: their leaves as linked key/value rows."""
    tables = []
    for f in files:
        if f.kind != "other":
            continue
        items = leaves(f.data)
        rows = [[Cell(key, key), _leaf_cell(f, key, value)] for key, value in items[:MAX_FALLBACK_ROWS]]
        tables.append({"id": f"other-{f.slug}", "file": f, "rows": rows, "more": max(0, len(items) - MAX_FALLBACK_ROWS)})
    return tables


def _leaf_cell(f: MetricFile, key: str, value: Any) -> Cell:
    if is_number(value):
        return Cell(fmt_value(value), value, f.href(key), f"{f.path} · {key}", "num", key)
    return Cell(fmt_value(value), None if value is None else str(value), f.href(key), f"{f.path} · {key}")


# --- pages ---------------------------------------------------------------------------------------

@dataclass
class Figure:
    id: str
    title: str
    spec: dict[str, Any] | None    # Plotly {data, layout}, None = static only
    png: str | None                # site-root-relative
    caption: str = ""

    @property
    def json(self) -> str:
        return json.dumps({"data": self.spec["data"], "layout": self.spec["layout"]}, sort_keys=True, ensure_ascii=False,
                          separators=(",", ":")).replace("</", "<\\/") if self.spec else ""


@dataclass
class Site:
    root: Path
    out: Path
    config: ReportConfig
    files: list[MetricFile]
    specs: Mapping[str, Mapping[str, Any]]
    params: Mapping[str, Any]
    results: list[GateResult]
    datasets: Mapping[str, DatasetInputs]
    written: list[Path] = field(default_factory=list)

    def copy(self, rel: str) -> str | None:
        """Copy a repository file into the site (same relative path under data/); its site path."""
        src = self.root / rel
        if not src.is_file():
            return None
        dest = self.out / "data" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return f"data/{rel}"

    def figure(self, fid: str, title: str, build, png_rel: str | None, caption: str = "") -> Figure:
        """A figure from `build()` (a spec) with the pipeline's PNG, or a matplotlib fallback."""
        spec = build()
        png = self.copy(png_rel) if png_rel else None
        if png is None and spec is not None:
            figs.fallback_png(spec, self.out / "figures" / f"{fid}.png")
            png = f"figures/{fid}.png"
        if spec and spec.get("n_shown") is not None and spec["n_shown"] < spec["n_points"]:
            caption = (caption + " " if caption else "") + f"{spec['n_shown']:,} of {spec['n_points']:,} points shown."
        return Figure(fid, title, spec, png, caption)


def model_page(site: Site, name: str) -> dict[str, Any]:
    """The model card: registry entry, contamination, metrics with spread and CIs, governance,
    limitations, throughput and hardware, parity plots."""
    spec = dict(site.specs.get(name) or {})
    files = [f for f in site.files if f.kind == "model" and f.data["model"] == name]
    sections = []
    per_dataset = {}
    for f in files:
        data = f.data
        # a zero-shot model never saw the split's train side: only the test role means anything
        zero_shot = model_type(data, spec) == "zero-shot"
        roles = ["test"] if zero_shot else ["test", "val"]
        metrics = [m for m in _headline(site.config) if any(is_number(f.value(f"strategies.{s}.mean.{r}.{m}"))
                                                             for s in data["strategies"] for r in roles)]
        rows = []
        for strategy in sorted(data["strategies"]):
            for role in roles:
                if not isinstance((data["strategies"][strategy].get("mean") or {}).get(role), Mapping):
                    continue
                cells = [Cell(strategy, strategy), Cell(role, role)]
                for m in metrics:
                    cell = metric_cell(f, f"strategies.{strategy}.mean.{role}.{m}")
                    std = f.value(f"strategies.{strategy}.std.{role}.{m}")
                    if cell.value is not None and is_number(std) and std > 0:
                        cell.text += f" ± {std:.2g}"
                    cells.append(cell)
                rows.append(cells)
        gap = []
        for metric, block in sorted((data.get("gap") or {}).items()):
            if isinstance(block, Mapping) and is_number(block.get("ratio")):
                gap.append([Cell(metric, metric), metric_cell(f, f"gap.{metric}.ratio"),
                            metric_cell(f, f"gap.{metric}.ci_low"), metric_cell(f, f"gap.{metric}.ci_high"),
                            metric_cell(f, f"gap.{metric}.n_materials_numerator")])
        contamination = [[Cell(k, k), _leaf_cell(f, f"contamination.{k}", v)]
                         for k, v in sorted((data.get("contamination") or {}).items()) if not isinstance(v, Mapping)]
        throughput = [[Cell(k, k), _leaf_cell(f, f"throughput.{k}", v)] for k, v in sorted((data.get("throughput") or {}).items())]
        notes = sorted((k, v) for k, v in (data.get("notes") or {}).items() if isinstance(v, str))
        lookup = figs.formula_lookup(site.root / "datasets" / f.group)
        figures = []
        for quantity, block in sorted((data.get("plots") or {}).items()):
            if isinstance(block, Mapping) and isinstance(block.get("csv"), str) and (site.root / block["csv"]).is_file():
                csv_path = site.root / block["csv"]
                figures.append(site.figure(f"parity-{f.slug}-{_safe(quantity)}", f"Parity: {quantity} ({f.group})",
                                           lambda p=csv_path, q=quantity, lk=lookup: figs.parity(p, q, lk), block.get("png"),
                                           f"Source: {block['csv']}."))
        extra = sorted(p for p in (site.root / "plots" / f.group / name).glob("*.png")
                       if not any(fig.png and fig.png.endswith(p.name) for fig in figures)) if f.group else []
        for p in extra:  # learning curves, dispersion overlays, error-vs-novelty as other stages write them
            figures.append(Figure(f"png-{f.slug}-{_safe(p.stem)}", p.stem.replace("_", " "), None,
                                  site.copy(p.relative_to(site.root).as_posix()), f"Source: {p.relative_to(site.root).as_posix()}."))
        governance = [r for r in site.results if r.file == f.path and not r.unmatched]
        sections.append({"file": f, "group": f.group, "metrics": [LABELS.get(m, m) for m in metrics], "rows": rows,
                         "gap": gap, "contamination": contamination, "throughput": throughput, "notes": notes,
                         "figures": figures, "governance": _governance_rows(governance),
                         "level": data.get("energy_kind"), "e_form_method": data.get("e_form_method")})
        if f.group in site.datasets:
            per_dataset[f.group] = (data, _summary_of(site, f.group, name))
    extra = []
    for f in site.files:
        if f.kind == "finetune" and f.data["model"] == name:
            items = [(k, v) for k, v in leaves(f.data) if is_number(v)]
            extra.append({"file": f, "rows": [[Cell(k, k), _leaf_cell(f, k, v)] for k, v in items[:MAX_FALLBACK_ROWS]],
                          "more": max(0, len(items) - MAX_FALLBACK_ROWS),
                          "figures": plot_figures(site, site.root / "plots" / f.group / f.stem, f"ft-{f.slug}")})
            continue
        if f.kind != "by-model" or name not in f.data["models"]:
            continue
        items = [(k, v) for k, v in leaves(f.data["models"][name]) if not isinstance(v, (list, str)) or is_number(v)]
        rows = [[Cell(k, k), _leaf_cell(f, f"models.{name}.{k}", v)] for k, v in items[:MAX_FALLBACK_ROWS]]
        plot_dir = site.root / "plots" / f.group / f.stem / name
        figures = []
        bands = plot_dir / "bands.csv"
        if bands.is_file() and figs.is_dispersion(bands):
            for material in figs.dispersion_materials(bands):
                figures.append(site.figure(f"dispersion-{f.slug}-{_safe(name)}-{_safe(material)}",
                                           f"Dispersion: {material}, {name} vs DFT",
                                           lambda b=bands, m=material: figs.dispersion(b, m),
                                           _rel(site.root, plot_dir / f"{material}_dispersion.png"),
                                           f"Source: {_rel(site.root, bands)}."))
        shown = {Path(fig.png or "").name for fig in figures}
        for png in sorted(plot_dir.glob("*.png")) if plot_dir.is_dir() else ():
            if png.name not in shown:
                rel = _rel(site.root, png)
                figures.append(Figure(f"png-{f.slug}-{_safe(name)}-{_safe(png.stem)}", png.stem.replace("_", " "), None,
                                      site.copy(rel), f"Source: {rel}."))
        extra.append({"file": f, "rows": rows, "more": max(0, len(items) - MAX_FALLBACK_ROWS), "figures": figures})
    registry = [[k, fmt_value(spec.get(k))] for k in ("name", "kind", "description", "checkpoint", "licence", "url", "versions", "_file")
                if k in spec]
    training = spec.get("training_set")
    defaults = spec.get("defaults") if isinstance(spec.get("defaults"), Mapping) else {}
    level = "; ".join(f"{label}: {fmt_value(value)}" for label, value in (
        ("level of theory", spec.get("level_of_theory") or spec.get("functional")), ("energies", spec.get("energy_kind")),
        ("MP2020-corrected", defaults.get("mp2020_corrected"))) if value is not None)
    return {"name": name, "registry": registry, "training": fmt_value(training) if training else "not declared",
            "level": fmt_value(level) if level else "not declared", "sections": sections, "extra": extra,
            "limitations": _limitations(spec, per_dataset)}


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def plot_figures(site: Site, plot_dir: Path, prefix: str) -> list[Figure]:
    """Figures of a results folder `plots/<group>/<stem>/`: known CSV kinds drawn with Plotly
    (their PNG, if any, as the fallback), every other PNG as a static image."""
    figures: list[Figure] = []
    if not plot_dir.is_dir():
        return figures
    used: set[str] = set()
    for csv_path in sorted(plot_dir.glob("*.csv")):
        if csv_path.name in figs.LINE_KINDS:
            png = csv_path.with_suffix(".png")
            used.add(png.name)
            figures.append(site.figure(f"{prefix}-{_safe(csv_path.stem)}", figs.LINE_KINDS[csv_path.name][3],
                                       lambda c=csv_path: figs.line_csv(c), _rel(site.root, png) if png.is_file() else None,
                                       f"Source: {_rel(site.root, csv_path)}."))
    for png in sorted(plot_dir.glob("*.png")):
        if png.name not in used:
            rel = _rel(site.root, png)
            figures.append(Figure(f"{prefix}-{_safe(png.stem)}", png.stem.replace("_", " "), None, site.copy(rel), f"Source: {rel}."))
    return figures


def results_page(site: Site, f: MetricFile) -> dict[str, Any]:
    """A page per metrics file of another kind (by-model or unknown): its values and its figures."""
    items = leaves(f.data)
    rows = [[Cell(k, k), _leaf_cell(f, k, v)] for k, v in items[:MAX_FALLBACK_ROWS]]
    figures = plot_figures(site, site.root / "plots" / f.group / f.stem, f"res-{f.slug}") if f.group else []
    if f.kind == "finetune":  # learning curve, error vs novelty
        figures += plot_figures(site, site.root / "plots" / f.group / f"finetune-{f.data['model']}", f"res-{f.slug}-ft") \
            if f.stem != f"finetune-{f.data['model']}" else []
    if f.kind == "by-model":
        for name in sorted(f.data["models"]):
            figures += plot_figures(site, site.root / "plots" / f.group / f.stem / name, f"res-{f.slug}-{_safe(name)}")
    return {"file": f, "rows": rows, "more": max(0, len(items) - MAX_FALLBACK_ROWS), "figures": figures}


def _summary_of(site: Site, dataset: str, model: str) -> dict[str, Any]:
    path = site.root / "metrics" / dataset / "summary.json"
    summary = read_json(path) or {}
    return ((summary.get("models") or {}).get(model)) or {}


def _headline(config: ReportConfig) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*config.headline, "force_cosine")))


def _governance_rows(results: Iterable[GateResult]) -> list[dict[str, Any]]:
    """Threshold checks one row each; tracked metrics counted per gate (as in governance.md)."""
    rows, tracked = [], {}
    for r in results:
        if r.status == TRACKED:
            tracked.setdefault(r.gate.name, []).append(r)
        else:
            rows.append({"gate": r.gate.name, "status": r.status, "key": r.key, "value": fmt_value(r.value),
                         "threshold": r.gate.threshold_text, "enforced": r.gate.enforce, "reason": r.reason})
    for name, items in tracked.items():
        rows.append({"gate": name, "status": TRACKED, "key": f"{len(items)} metrics", "value": "—",
                     "threshold": f"tolerance {items[0].gate.tolerance_text} (xtalbench diff)",
                     "enforced": items[0].gate.enforce, "reason": "regression-tracked against the base commit"})
    return rows


def dataset_page(site: Site, name: str) -> dict[str, Any]:
    """The dataset card: provenance and version pin, counts funnel, split card, KPCA map, dedup sweep."""
    inputs = site.datasets[name]
    entry = (site.params.get("datasets") or {}).get(name) or {}
    dv = inputs.data_version or {}
    provenance = [[k, fmt_value(v)] for k, v in sorted(entry.items())] if isinstance(entry, Mapping) else []
    pin = [[k, fmt_value(dv.get(k))] for k in ("source", "source_details", "fetched_at", "limit", "inputs_sha256",
                                                 "outputs_sha256", "packages") if k in dv]
    stage_files = {f.stem: f for f in site.files if f.group == name and f.kind in STAGE_FILES}
    steps = funnel(inputs.fetch, inputs.dedup, inputs.featurize, inputs.split)
    figures = []
    if steps:
        figures.append(site.figure(f"funnel-{_safe(name)}", "Counts through the pipeline", lambda: figs.funnel(steps), None))
    sweep = site.root / "plots" / name / "dedup_sweep.json"
    if sweep.is_file():
        figures.append(site.figure(f"sweep-{_safe(name)}", "Dedup threshold sweep",
                                   lambda: figs.dedup_sweep(sweep, (inputs.dedup or {}).get("levels")), None,
                                   f"Source: plots/{name}/dedup_sweep.json; the stars are the thresholds in use."))
    kpca = f"plots/{name}/kpca_map.png"
    kpca_csv = site.root / "plots" / name / "kpca_map.csv"
    if kpca_csv.is_file():  # per-material coordinates, where the split stage writes them: interactive
        lookup = figs.formula_lookup(site.root / "datasets" / name)
        figures.append(site.figure(f"kpca-{_safe(name)}", "Kernel-PCA map of the LOCO clusters",
                                   lambda: figs.kpca_map(kpca_csv, lookup), kpca if (site.root / kpca).is_file() else None,
                                   f"Source: plots/{name}/kpca_map.csv."))
    elif (site.root / kpca).is_file():
        figures.append(Figure(f"kpca-{_safe(name)}", "Kernel-PCA map of the LOCO clusters", None, site.copy(kpca),
                              f"Source: {kpca} (written by the split stage)."))
    split_file = stage_files.get("split")
    folds = [{"cells": [Cell(r["strategy"], r["strategy"]), Cell(r["fold"], r["fold"]), Cell(str(r["name"]), str(r["name"])),
                        *[metric_cell(split_file, f"strategies.{r['strategy']}.folds.{r['fold']}.{role}") for role in ("train", "val", "test")]]}
             for r in fold_sizes(inputs.split)] if split_file else []
    models = sorted({f.data["model"] for f in site.files if f.kind == "model" and f.group == name})
    return {"name": name, "provenance": provenance, "pin": pin, "steps": steps, "figures": figures, "folds": folds,
            "stage_files": [stage_files[k] for k in sorted(stage_files)], "models": models}


# --- rendering -----------------------------------------------------------------------------------

def model_names(files: list[MetricFile]) -> list[str]:
    """Every model with results: model metrics files and the blocks of by-model files."""
    names = {f.data["model"] for f in files if f.kind == "model"}
    names |= {m for f in files if f.kind == "by-model" for m in f.data["models"]}
    names |= {f.data["model"] for f in files if f.kind == "finetune"}
    return sorted(names)


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["dv"] = data_value
    env.filters["safe_name"] = _safe
    return env


def plotly_js() -> Path:
    """plotly.min.js as shipped in the `plotly` package (no network)."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise ReportError(f"{path}: plotly.min.js not found in the installed `plotly` package")
    return path


def build_site(root: str | Path, params: Mapping[str, Any], config: ReportConfig, results: list[GateResult],
               datasets: Mapping[str, DatasetInputs], specs: Mapping[str, Mapping[str, Any]],
               out: str | Path | None = None) -> list[Path]:
    """Write the whole site under `out` (default `<reports_dir>/site`); returns the files written."""
    root = Path(root)
    out = Path(out) if out is not None else root / config.reports_dir / SITE_DIR
    if out.exists():
        shutil.rmtree(out)
    (out / "static").mkdir(parents=True)
    shutil.copyfile(plotly_js(), out / "static" / "plotly.min.js")
    for name in ("site.css", "site.js"):
        shutil.copyfile(HERE / "static" / name, out / "static" / name)
    site = Site(root, out, config, discover(root), specs, params, results, datasets)
    env = environment()

    models = model_names(site.files)
    nav = {"models": models, "datasets": sorted(datasets)}

    def render(template: str, rel: str, **context: Any) -> None:
        depth = rel.count("/")
        html = env.get_template(template).render(base="../" * depth, **{**nav, **context})
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html)

    summary = _overall(results)
    for f in site.files:
        raw = site.copy(f.path)
        render("source.html.j2", f"{f.href()}", file=f, raw=raw, plotly=False,
               rows=[{"key": k, "text": fmt_value(v), "value": v} for k, v in leaves(f.data)])
    for name in models:
        render("model.html.j2", f"models/{_safe(name)}.html", page=model_page(site, name))
    for name in sorted(datasets):
        render("dataset.html.j2", f"datasets/{_safe(name)}.html", page=dataset_page(site, name))
    for f in site.files:
        if f.kind in ("other", "by-model", "finetune"):
            render("results.html.j2", f"results/{f.slug}.html", page=results_page(site, f))
    boards = leaderboards(site.files, specs, config) + finetune_boards(site.files, config) + by_model_boards(site.files)
    boards.sort(key=lambda b: (b["group"] not in datasets, b["group"]))  # stable: datasets first, tasks in order
    render("index.html.j2", "index.html", boards=boards, other=fallback_tables(site.files),
           governance=summary,
           governance_md=(root / config.reports_dir / "governance.md").is_file())
    return sorted(p for p in out.rglob("*") if p.is_file())


def _overall(results: list[GateResult]) -> dict[str, Any]:
    blocking = [r for r in results if r.blocking]
    return {"status": FAIL if blocking else "PASS", "blocking": len(blocking),
            "unmatched": [r for r in results if r.unmatched],
            "per_model": sorted({group_of(r.file)[0] for r in results if not r.unmatched})}
