"""The static results site (`reports/site/`), built from a small synthetic metrics tree whose
numbers are written by hand here, and from the committed `metrics/`. No browser: the HTML is
parsed with the standard library (tests/test_site_browser.py opens it in Chromium)."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from xtalbench.report.figures import FigureError, parity
from xtalbench.report.site import discover
from xtalbench.report.stage import build_reports

ROOT = Path(__file__).resolve().parents[1]

# --- the synthetic tree ---------------------------------------------------------------------------

# Hand-picked test-role means: (e_form MAE meV/atom, F1) per model and strategy; None = not computed.
SCORES = {
    "alpha": {"random": (30.0, 0.8), "loco": (45.5, 0.61)},
    "beta": {"random": (12.25, 0.9), "loco": (80.0, 0.4)},
    "gamma": {"random": (20.125, 0.7), "loco": (60.0, None)},
}
KINDS = {"alpha": "chgnet", "beta": "mace-trained", "gamma": "mace-foundation"}


def model_file(name: str) -> dict:
    strategies = {}
    for strategy, (mae, f1) in SCORES[name].items():
        test = {"n": 4, "e_form_mae_meV_per_atom": mae, "f1": f1}
        strategies[strategy] = {"folds": {"0": {"test": test, "val": {"n": 1, "e_form_mae_meV_per_atom": mae / 2, "f1": 0.5}}},
                                "mean": {"test": test, "val": {"e_form_mae_meV_per_atom": mae / 2, "f1": 0.5}},
                                "std": {"test": {"e_form_mae_meV_per_atom": 1.5}}, "n_folds": 1}
    data = {"model": name, "dataset": "toy", "kind": KINDS[name], "strategies": strategies,
            "contamination": {"fraction": 0.25, "method": "database-version"},
            "throughput": {"device": "cpu", "structures_per_s": 12.5},
            "notes": {"energy_mae_meV_per_atom": "no DFT `energy` labels in the dataset"}}
    if name == "alpha":
        data["plots"] = {"e_form": {"csv": "plots/toy/alpha/parity_e_form.csv", "png": None}}
        data["gap"] = {"e_form_mae_meV_per_atom": {"ratio": 1.5167, "ci_low": 1.2, "ci_high": 1.9, "n_materials_numerator": 4}}
    return data


def make_tree(root: Path) -> Path:
    """A repository root with one dataset `toy`, three models, a by-model file and an unknown file."""
    files = {
        "metrics/toy/fetch.json": {"read": 10, "kept": 9, "quarantined": 1, "materials": 9,
                                   "quarantined_by_field": {"positions": 1}},
        "metrics/toy/dedup.json": {"read": {"frames": 9, "materials": 9}, "kept": {"frames": 7, "materials": 7},
                                   "dropped": {"frames": 2, "materials": 2}, "quarantined": {"frames": 0, "materials": 0},
                                   "thinned": {"frames": 0},
                                   "levels": {"composition": {"metric": "magpie", "threshold": 0.1, "read": 9, "kept": 7, "dropped": 2}}},
        "metrics/toy/featurize.json": {"rows_read": 7, "rows_written": 7, "quarantined": 0},
        "metrics/toy/split.json": {"input": {"featurized": 7, "frames": 7, "not_featurized": 0}, "strategies": {
            "random": {"folds": {"0": {"name": "random", "train": 5, "val": 1, "test": 1}}, "n_folds": 1},
            "loco": {"folds": {"0": {"name": "cluster 0", "train": 4, "val": 1, "test": 2},
                               "1": {"name": "cluster 1", "train": 3, "val": 1, "test": 3}}, "n_folds": 2}}},
        "metrics/dynamics/md.json": {"models": {"alpha": {"median": {"drift_meV_per_atom_ps": 1.5}, "stable_fraction": 0.9},
                                                "beta": {"median": {"drift_meV_per_atom_ps": 4.25}, "stable_fraction": 0.5}}},
        "metrics/toy/finetune-alpha.json": {"model": "alpha", "method": "readout-head", "folds": {
            "random-0": {"test": {"zero_shot": {"e_form_mae_meV_per_atom": 30.0},
                                  "finetuned": {"e_form_mae_meV_per_atom": 15.5, "e_form_mae_ci95_meV_per_atom": [12.0, 19.0]}}},
            "loco-0": {"test": {"zero_shot": {"e_form_mae_meV_per_atom": 45.5}, "finetuned": {"e_form_mae_meV_per_atom": 33.0}}}},
            "learning_curve": {"sizes": [10, 20, 40], "mae": [90.5, 60.25, 41.0]}},
        "metrics/zeroshot/weird.json": {"foo": {"bar": 3.25}, "label": "x", "items": [1, 2]},
        "metrics/zeroshot/leaderboard.json": {"datasets": ["set-a", "set-b"], "models": {
            "alpha": {"seen_set": "set-a", "seen_is_training_set": True, "datasets": {
                "set-a": {"energy_mae_meV_per_atom": 20.5, "energy_mae_meV_per_atom_ci": [18.0, 23.0]},
                "set-b": {"energy_mae_meV_per_atom": 61.5}},
                "ratios": {"all_unseen": {"energy_mae_meV_per_atom": {"ratio": 3.0, "ci": [2.5, 3.5]}}}},
            "gamma": {"seen_set": "set-b", "seen_is_training_set": False, "datasets": {
                "set-a": {"energy_mae_meV_per_atom": 44.0}, "set-b": {"energy_mae_meV_per_atom": 11.0}},
                "ratios": {"all_unseen": {"energy_mae_meV_per_atom": {"ratio": 4.0, "ci": [3.0, 5.0]}}}}}},
        **{f"metrics/toy/{m}.json": model_file(m) for m in SCORES},
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps(data, indent=1))
    (root / "plots/toy/alpha").mkdir(parents=True)
    (root / "plots/toy/alpha/parity_e_form.csv").write_text(
        "frame_id,strategy,fold,truth,prediction\nmp-1,loco,0,-1.5,-1.4\nmp-2,loco,0,-0.5,-0.7\nmp-3,random,0,0.25,0.3\n")
    (root / "plots/toy/kpca_map.csv").write_text("material_id,kpc1,kpc2,cluster\nmp-1,0.1,0.2,0\nmp-2,-0.3,0.05,1\n")
    (root / "datasets/toy").mkdir(parents=True)
    pq.write_table(pa.table({"frame_id": ["mp-1", "mp-2", "mp-3"], "material_id": ["mp-1", "mp-2", "mp-3"],
                             "formula": ["NaCl", "MgO", "Si"]}), root / "datasets/toy/dedup.parquet")
    (root / "plots/toy/finetune-alpha").mkdir(parents=True)
    (root / "plots/toy/finetune-alpha/learning_curve.csv").write_text("n_train,test_mae_meV_per_atom\n10,90.5\n20,60.25\n40,41.0\n")
    (root / "plots/toy/dedup_sweep.json").write_text(json.dumps(
        [{"level": "composition", "metric": "magpie", "threshold": t, "kept": k, "read": 9} for t, k in ((0.0, 9), (0.1, 7), (0.2, 5))]))
    (root / "models").mkdir()
    (root / "models/alpha.yaml").write_text(yaml.safe_dump({"name": "alpha", "kind": "chgnet", "licence": "MIT",
                                                            "training_set": {"name": "MPtrj"}, "energy_kind": "total"}))
    (root / "params.yaml").write_text(yaml.safe_dump({
        "datasets": {"toy": {"source": "local", "path": "toy.extxyz"}},
        "gates": [
            {"name": "loco_f1", "metric": "strategies.loco.mean.test.f1", "file": "metrics/*/*.json", "direction": "higher", "min": 0.5},
            {"name": "mae", "metric": "strategies.*.mean.test.*_mae_*", "file": "metrics/*/*.json", "direction": "lower",
             "tolerance_rel": 0.1},
            {"name": "energy", "metric": "strategies.*.mean.test.energy_mae_meV_per_atom", "file": "metrics/*/*.json",
             "direction": "lower", "max": 100},
        ]}))
    return root


def build(root: Path) -> Path:
    params = yaml.safe_load((root / "params.yaml").read_text())
    build_reports(list(params["datasets"]), params, root)
    return root / "reports" / "site"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return build(make_tree(tmp_path_factory.mktemp("tree")))


# --- a small HTML reader ------------------------------------------------------------------------

class Page(HTMLParser):
    """Tables (id → rows of cells {text, value, href}), every link target and every element id."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[dict]]] = {}
        self.headers: dict[str, list[str]] = {}
        self.links: list[str] = []
        self.ids: set[str] = set()
        self._table: str | None = None
        self._cell: dict | None = None
        self._th: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        for key in ("href", "src"):
            if a.get(key):
                self.links.append(a[key])
        if tag == "table":
            self._table = a.get("id", f"_{len(self.tables)}")
            self.tables[self._table], self.headers[self._table] = [], []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag == "td" and self._table:
            self._cell = {"text": "", "value": a.get("data-value"), "href": None}
        elif tag == "th" and self._table:
            self._th = []
        elif tag == "a" and self._cell is not None:
            self._cell["href"] = a.get("href")

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.tables[self._table][-1].append(self._cell)
            self._cell = None
        elif tag == "th" and self._th is not None:
            self.headers[self._table].append("".join(self._th).strip())
            self._th = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._th is not None:
            self._th.append(data)


def page(path: Path) -> Page:
    return Page(path.read_text())


def board(index: Page, table_id: str) -> dict[str, list[dict]]:
    """{model: cells} of a leaderboard table (body rows only)."""
    return {row[0]["text"]: row for row in index.tables[table_id] if row}


# --- tests --------------------------------------------------------------------------------------

def test_discover_tells_kinds_apart(tmp_path):
    kinds = {f.path: f.kind for f in discover(make_tree(tmp_path))}
    assert kinds["metrics/toy/alpha.json"] == "model" and kinds["metrics/toy/split.json"] == "split"
    assert kinds["metrics/dynamics/md.json"] == "by-model"
    assert kinds["metrics/zeroshot/weird.json"] == "other"


def test_leaderboard_numbers_equal_the_metric_files_and_link_to_them(site):
    index = page(site / "index.html")
    rows = board(index, "lb-toy-eform")
    assert set(rows) == set(SCORES)
    header = index.headers["lb-toy-eform"]
    col = {"random": next(i for i, h in enumerate(header) if "random test (ID)" in h),
           "loco": next(i for i, h in enumerate(header) if "loco test (OOD)" in h)}
    for model, by_strategy in SCORES.items():
        source = json.loads((site.parents[1] / f"metrics/toy/{model}.json").read_text())
        for strategy, (mae, _) in by_strategy.items():
            cell = rows[model][col[strategy]]
            assert float(cell["value"]) == mae == source["strategies"][strategy]["mean"]["test"]["e_form_mae_meV_per_atom"]
            assert cell["text"] == f"{mae:.4g}"
            key = f"strategies.{strategy}.mean.test.e_form_mae_meV_per_atom"
            assert cell["href"] == f"sources/metrics__toy__{model}.json.html#{key}"
            target = page(site / cell["href"].split("#")[0])
            row = next(r for r in target.tables["_0"] if r and r[0]["text"] == key)
            assert float(row[1]["value"]) == mae
    # a missing number is shown as missing, not as a zero
    stability = board(index, "lb-toy-stability")
    f1_loco = next(i for i, h in enumerate(index.headers["lb-toy-stability"]) if h.startswith("F1 · loco"))
    assert stability["gamma"][f1_loco]["value"] == "" and stability["gamma"][f1_loco]["href"] is None
    assert stability["alpha"][1]["text"] == "zero-shot" and stability["beta"][1]["text"] == "trained here"


def resolve(base: Path, link: str) -> tuple[Path, str]:
    parts = urlsplit(link)
    return (base.parent / unquote(parts.path)).resolve() if parts.path else base, parts.fragment


def test_every_link_resolves(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 1 + 3 + 1 + 8  # index, models, dataset, sources
    for path in pages:
        for link in page(path).links:
            assert not link.startswith(("http:", "https:", "//")), f"{path}: external link {link}"
            if link.startswith("data:"):
                continue
            target, fragment = resolve(path, link)
            assert target.is_file(), f"{path.relative_to(site)}: {link} does not exist"
            if fragment and target.suffix == ".html":
                assert fragment in page(target).ids, f"{path.relative_to(site)}: {link}: no id {fragment!r}"


def test_unknown_and_by_model_files_get_tables(site):
    index = page(site / "index.html")
    other = index.tables["other-metrics__zeroshot__weird.json"]
    values = {r[0]["text"]: r[1] for r in other if r}
    assert float(values["foo.bar"]["value"]) == 3.25 and values["label"]["text"] == "x"
    md = board(index, "lb-metrics__dynamics__md.json")
    header = index.headers["lb-metrics__dynamics__md.json"]
    drift = next(i for i, h in enumerate(header) if "drift" in h)
    assert float(md["beta"][drift]["value"]) == 4.25 and set(md) == {"alpha", "beta"}
    assert "beta" in (site / "models/beta.html").read_text() and (site / "models/gamma.html").is_file()


def test_zero_shot_seen_vs_unseen_board(site):
    index = page(site / "index.html")
    table = "lb-metrics__zeroshot__leaderboard.json-energy_mae_meV_per_atom"
    rows, header = board(index, table), index.headers[table]
    assert header[:2] == ["model", "seen set"] and header[2].startswith("set-a") and header[3].startswith("set-b")
    # values with their 95% CI where the file gives one
    assert [rows["alpha"][i]["text"] for i in (1, 2, 3, 4)] == ["set-a", "20.5 [18, 23]", "61.5", "3 [2.5, 3.5]"]
    assert rows["gamma"][1]["text"] == "set-b (not its training set)" and float(rows["gamma"][4]["value"]) == 4.0
    assert rows["alpha"][2]["href"].endswith("#models.alpha.datasets.set-a.energy_mae_meV_per_atom")


def test_finetune_board_puts_id_before_loco(site):
    index = page(site / "index.html")
    rows = [[c["text"] for c in r] for r in index.tables["lb-toy-finetune"] if r]
    assert index.headers["lb-toy-finetune"][:5] == ["model", "fold", "role", "zero-shot E_form MAE (meV/atom) ↓",
                                                     "fine-tuned E_form MAE (meV/atom) ↓"]
    assert rows == [["alpha", "random-0", "ID", "30", "15.5 [12, 19]"], ["alpha", "loco-0", "OOD", "45.5", "33"]]
    text = (site / "index.html").read_text()
    assert "Fine-tuned: ID vs LOCO" in text
    # one heading per group, the datasets' first (the finetune board sits under `toy`, not after dynamics)
    assert text.count('id="group-toy"') == 1 and text.index('id="group-toy"') < text.index('id="group-dynamics"')
    assert "finetune-alpha" in (site / "models/alpha.html").read_text()


def test_other_results_get_a_page_with_their_figures(site):
    text = (site / "results/metrics__toy__finetune-alpha.json.html").read_text()
    assert "Learning curve" in text and "figure-data" in text
    spec = json.loads(text.split('class="figure-data" data-target="res-metrics__toy__finetune-alpha.json-learning_curve-plot">')[1]
                      .split("</script>")[0])
    assert spec["data"][0]["x"] == [10.0, 20.0, 40.0] and spec["data"][0]["y"] == [90.5, 60.25, 41.0]
    assert (site / "figures/res-metrics__toy__finetune-alpha.json-learning_curve.png").is_file()  # static fallback


def test_dataset_page_counts_funnel_and_folds(site):
    ds = page(site / "datasets/toy.html")
    funnel = [[c["text"] for c in r] for r in ds.tables["_1"] if r]
    # fetch read 10 → kept 9 (1 quarantined) → dedup 7 materials (2 near-duplicates) → 7 featurized → 7 split
    assert funnel[0][:2] == ["fetch: records read", "10"]
    assert funnel[1][:4] == ["fetch: kept", "9", "9", "1"] and "positions 1" in funnel[1][4]
    assert funnel[2][:4] == ["dedup: composition (magpie ≤ 0.1)", "—", "7", "2"]
    assert funnel[3][:4] == ["dedup: kept", "7", "7", "2"]
    assert funnel[-1][:2] == ["split: input", "7"]
    folds = [[c["text"] for c in r] for r in ds.tables["folds-toy"] if r]
    assert folds == [["loco", "0", "cluster 0", "4", "1", "2"], ["loco", "1", "cluster 1", "3", "1", "3"],
                     ["random", "0", "random", "5", "1", "1"]]
    text = (site / "datasets/toy.html").read_text()
    assert "Dedup threshold sweep" in text and "figure-data" in text and (site / "figures/sweep-toy.png").is_file()
    # the KPCA map is interactive where per-material coordinates exist, hover = id · formula
    spec = json.loads(text.split('data-target="kpca-toy-plot">')[1].split("</script>")[0])
    assert [t["name"] for t in spec["data"]] == ["cluster 0", "cluster 1"] and spec["data"][1]["text"] == ["mp-2 · MgO"]


def test_model_pages_governance_and_roles(site):
    alpha = page(site / "models/alpha.html")
    roles = {r[1]["text"] for r in alpha.tables["metrics-toy"] if r}
    assert roles == {"test"}  # zero-shot: the split's val role means nothing for it
    beta = page(site / "models/beta.html")
    assert {r[1]["text"] for r in beta.tables["metrics-toy"] if r} == {"test", "val"}
    text = (site / "models/alpha.html").read_text()
    assert "MPtrj" in text and "structures_per_s" in text and "Parity: e_form" in text
    assert "mp-2 · MgO · fold 0" in text  # hover text of the parity plot: id, formula (from dedup.parquet), fold
    assert "30 ± 1.5" in text       # mean ± std over folds
    governance = (site.parent / "governance.md").read_text()
    # `energy` is noted impossible in every file: one configuration row, not one per file × strategy
    assert governance.count("`energy`") == 1 and "matches no metric that can exist" in governance
    assert "| loco_f1 | **FAIL** | toy | `loco.test.f1` | 0.4 |" in governance       # beta
    assert "| loco_f1 | **PASS** | toy | `loco.test.f1` | 0.61 |" in governance      # alpha


def test_site_is_deterministic(tmp_path):
    first = build(make_tree(tmp_path / "a"))
    second = build(make_tree(tmp_path / "b"))
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


def test_malformed_parity_csv_names_file_line_and_column(tmp_path):
    path = tmp_path / "parity.csv"
    path.write_text("frame_id,strategy,fold,truth,prediction\nmp-1,,,1.0,abc\n")
    with pytest.raises(FigureError, match=r"parity\.csv: line 2: column `prediction` = 'abc'"):
        parity(path, "energy", {})


def test_committed_metrics_build_and_list_every_model(tmp_path):
    for name in ("metrics", "plots", "models"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("trained", "*.parquet"))
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    datasets = [d for d in params["datasets"] if (tmp_path / "metrics" / d).is_dir()]
    build_reports(datasets, params, tmp_path)
    index = page(tmp_path / "reports/site/index.html")
    for f in discover(tmp_path):
        if f.kind != "model":
            continue
        tables = [t for t in index.tables if t.startswith(f"lb-{f.group}-")]
        assert any(f.data["model"] in board(index, t) for t in tables), f"{f.path}: not on the leaderboard"
