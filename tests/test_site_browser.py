"""End to end: the generated site opened from disk in headless Chromium (Debian's, driven by
Playwright; `make test` installs it). Checks that the leaderboards list every evaluated model
with the numbers of the metric files, that sorting works, that every link resolves, that the
figures render and that the console stays clean. Screenshots are kept under pytest's tmp dir
(printed; set XTALBENCH_SCREENSHOTS=<dir> to keep them elsewhere)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from xtalbench.report.site import discover
from xtalbench.report.stage import build_reports

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("XTALBENCH_CHROMIUM", "/usr/bin/chromium"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

_spec = importlib.util.spec_from_file_location("site_tree", Path(__file__).with_name("test_site.py"))
site_tree = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(site_tree)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A Chromium context with a fresh user-data-dir; skipped (saying why) without a browser."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]'); the browser test needs it")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (`make test` does: apt-get install chromium)")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=FLAGS, viewport={"width": 1280, "height": 900})
        yield context
        context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    where = os.environ.get("XTALBENCH_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {path}")
    return path


class Visit:
    """One tab that records console errors and page errors of every page it opens."""

    def __init__(self, context) -> None:
        self.page = context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"{self.page.url}: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"{self.page.url}: {e}"))
        self.page.on("requestfailed", lambda r: self.errors.append(f"{self.page.url}: failed to load {r.url}"))

    def open(self, path: Path):
        self.page.goto(path.as_uri())
        self.page.wait_for_load_state("load")
        return self.page


LEADERBOARD_JS = """() => Array.from(document.querySelectorAll('table.leaderboard-table')).map(t => ({
  id: t.id, group: t.dataset.group,
  keys: Array.from(t.tHead.rows[0].cells).map(th => th.dataset.key || ''),
  rows: Array.from(t.tBodies[0].rows).map(r => ({model: r.dataset.model, file: r.dataset.file,
    cells: Array.from(r.cells).map(c => ({text: c.textContent.trim(), value: c.dataset.value, key: c.dataset.key || '',
      href: c.querySelector('a') ? c.querySelector('a').href : null}))}))}))"""


def lookup(data, key: str):
    for part in key.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def check_leaderboards(page, root: Path) -> set[str]:
    """Every numeric cell equals the value at its key in its metrics file; returns the models listed."""
    listed = set()
    for table in page.evaluate(LEADERBOARD_JS):
        for row in table["rows"]:
            listed.add((table["group"], row["model"]))
            source = json.loads((root / row["file"]).read_text())
            n_keyed = 0
            for header_key, cell in zip(table["keys"], row["cells"], strict=True):
                key = cell["key"]
                if header_key:  # a metric column: every cell names its key
                    assert key, (table["id"], row["model"], header_key)
                if not key:
                    continue
                n_keyed += 1
                expected = lookup(source, key)
                if isinstance(expected, (int, float)) and not isinstance(expected, bool):
                    assert float(cell["value"]) == expected, (row["file"], key)
                    shown = f"{expected:,}" if isinstance(expected, int) else f"{expected:.4g}"
                    assert cell["text"] == shown or cell["text"].startswith(shown + " "), (row["file"], key)  # "± std", "[CI]"
                    assert cell["href"] and cell["href"].endswith("#" + key)
                else:
                    assert cell["value"] in ("", None) and cell["href"] is None, (row["file"], key)
            assert n_keyed, (table["id"], row["model"])
    return listed


def check_links(page) -> None:
    """Every link and image on the page points at an existing file (and anchor)."""
    targets = page.evaluate("() => Array.from(document.querySelectorAll('a[href], img[src], script[src], link[href]'))"
                            ".map(e => e.href || e.src)")
    for url in targets:
        if url.startswith("data:"):
            continue
        assert url.startswith("file://"), f"{page.url}: not a local link: {url}"
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(url)
        path = Path(unquote(parts.path))
        assert path.is_file(), f"{page.url}: {url} does not exist"
        if parts.fragment and path.suffix == ".html":
            assert f'id="{parts.fragment}"' in path.read_text(), f"{page.url}: {url}: no such anchor"


def visit_all(browser, site: Path, shots: Path, prefix: str) -> Visit:
    """Every page but the per-file source pages (plain tables; their links are checked from the
    HTML in tests/test_site.py, and every link into them here, anchor included)."""
    visit = Visit(browser)
    for path in sorted(site.rglob("*.html")):
        if "sources" in path.relative_to(site).parts:
            continue
        page = visit.open(path)
        check_links(page)
        n_figures = page.locator("script.figure-data").count()
        assert page.locator("[data-rendered=plotly]").count() == n_figures, f"{path}: a figure did not render"
        # the index whole; other pages their first screen (full-page shots of long cards are slow)
        page.screenshot(path=str(shots / f"{prefix}-{path.parent.name}-{path.stem}.png"), full_page=path.name == "index.html")
    return visit


def test_synthetic_site_in_chromium(browser, shots, tmp_path):
    root = site_tree.make_tree(tmp_path)
    site = site_tree.build(root)
    visit = Visit(browser)
    page = visit.open(site / "index.html")
    listed = check_leaderboards(page, root)
    assert {m for g, m in listed if g == "toy"} == set(site_tree.SCORES)

    # sorting: click the E_form LOCO header → ascending, again → descending; missing values stay last
    table = page.locator("#lb-toy-eform")
    header = table.locator("th", has_text="loco test (OOD)")
    loco = {m: s["loco"][0] for m, s in site_tree.SCORES.items()}
    header.click()
    assert table.locator("tbody tr").evaluate_all("rs => rs.map(r => r.dataset.model)") == sorted(loco, key=loco.get)
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert table.locator("tbody tr").evaluate_all("rs => rs.map(r => r.dataset.model)") == sorted(loco, key=loco.get, reverse=True)
    stability = page.locator("#lb-toy-stability")
    f1 = stability.locator("th", has_text="F1 · loco")
    for _ in range(2):  # both directions: gamma has no LOCO F1 and sorts last
        f1.click()
        assert stability.locator("tbody tr").evaluate_all("rs => rs.map(r => r.dataset.model)")[-1] == "gamma"
    page.screenshot(path=str(shots / "synthetic-index-sorted.png"), full_page=True)

    # a leaderboard link lands on the row of its key
    page.locator('#lb-toy-eform tbody tr[data-model=beta] a[href$="#strategies.random.mean.test.e_form_mae_meV_per_atom"]').click()
    page.wait_for_load_state("load")
    assert page.url.endswith("#strategies.random.mean.test.e_form_mae_meV_per_atom")
    row = page.locator('[id="strategies.random.mean.test.e_form_mae_meV_per_atom"] td').nth(1)
    assert float(row.get_attribute("data-value")) == 12.25

    errors = visit.errors + visit_all(browser, site, shots, "synthetic").errors
    assert not errors, errors


def test_committed_metrics_site_in_chromium(browser, shots, tmp_path):
    for name in ("metrics", "plots", "models"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("trained", "*.parquet"))
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    build_reports([d for d in params["datasets"] if (tmp_path / "metrics" / d).is_dir()], params, tmp_path)
    site = tmp_path / "reports" / "site"
    visit = Visit(browser)
    page = visit.open(site / "index.html")
    listed = check_leaderboards(page, tmp_path)
    evaluated = {(f.group, f.data["model"]) for f in discover(tmp_path) if f.kind == "model"}
    assert evaluated and evaluated <= listed, evaluated - listed
    errors = visit.errors + visit_all(browser, site, shots, "committed").errors
    assert not errors, errors
