"""DVC deps are complete: every module a stage's command imports is covered by a dep.

The import graph is read from the source with `ast` (no module is imported), starting at the
CLI module of the stage's `xtalbench <verb>` (`xtalbench.cli.MODULES`). Imports inside
functions count (the stages import lazily), and so do string literals naming a module
(`importlib.import_module` tables such as the fetch sources). A dep covers a file when it is
that file or a folder above it. Both the root dvc.yaml and every pipelines/*/dvc.yaml are checked.
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from xtalbench.cli import MODULES

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
# Imported by every stage but holds only a docstring and `__version__` (checked below), which
# no output depends on (DATA_VERSION reads the installed version from package metadata).
NOT_A_DEP = {"src/xtalbench/__init__.py"}
# Stages whose command is not an `xtalbench` verb, or whose deps are knowingly incomplete
# (unfinished work of a parallel change), with the reason. Empty: every stage is checked.
KNOWN_EXCEPTIONS: dict[str, str] = {}
MODULE_STRING = re.compile(r"^xtalbench(\.[A-Za-z_]\w*)+$")


def module_file(name: str) -> Path | None:
    """src/ path of a dotted xtalbench module name (package → its __init__.py), or None."""
    base = SRC.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """xtalbench modules `path` imports anywhere in its body, parents packages included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import module`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_STRING.match(node.value):
            names.add(node.value)
    found = set()
    for name in names:
        if not name.startswith("xtalbench"):
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b and a.b.c
            if module_file(".".join(parts[:i])) is not None:
                found.add(".".join(parts[:i]))
    return found


def import_closure(start: str) -> set[Path]:
    """Every source file that importing `start` (and what it imports, transitively) can load."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(imported_modules(module_file(name)) - seen)
    return {module_file(name) for name in seen}


def stage_definitions(dvc_yaml: Path) -> dict[str, dict]:
    """Stage name → its (unresolved) definition: the `do` block of foreach stages, else itself."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: (body["do"] if "foreach" in body else body) for name, body in stages.items()}


def verb(cmd) -> str | None:
    cmd = cmd if isinstance(cmd, str) else " ".join(cmd)
    words = cmd.split()
    return words[1] if len(words) > 1 and words[0] == "xtalbench" else None


def uncovered(dvc_yaml: Path, name: str, body: dict) -> list[str]:
    """Source files the stage's command imports that none of its deps covers (repo-relative)."""
    wdir = (dvc_yaml.parent / body.get("wdir", ".")).resolve()
    deps = [(wdir / d).resolve() for d in body.get("deps", []) if isinstance(d, str) and "${" not in d]
    missing = []
    for path in sorted(import_closure(MODULES[verb(body["cmd"])])):
        rel = path.relative_to(ROOT).as_posix()
        if rel not in NOT_A_DEP and not any(path == d or d in path.parents for d in deps):
            missing.append(rel)
    return missing


PIPELINES = [ROOT / "dvc.yaml", *sorted((ROOT / "pipelines").glob("*/dvc.yaml"))]
STAGES = [
    pytest.param(dvc_yaml, name, body, id=f"{dvc_yaml.parent.relative_to(ROOT).as_posix()}:{name}")
    for dvc_yaml in PIPELINES
    for name, body in stage_definitions(dvc_yaml).items()
]


@pytest.mark.parametrize("dvc_yaml, name, body", STAGES)
def test_stage_deps_cover_every_module_its_command_imports(dvc_yaml: Path, name: str, body: dict) -> None:
    key = f"{dvc_yaml.parent.relative_to(ROOT).as_posix()}:{name}"
    if key in KNOWN_EXCEPTIONS:
        pytest.skip(KNOWN_EXCEPTIONS[key])
    assert verb(body["cmd"]) in MODULES, f"{key}: command {body['cmd']!r} is not an xtalbench verb"
    assert uncovered(dvc_yaml, name, body) == [], f"{key}: deps miss modules its command imports"


def test_the_walker_finds_lazy_relative_and_string_imports(tmp_path, monkeypatch) -> None:
    """The walker on a made-up package: what a hand reading of the files says it imports."""
    pkg = tmp_path / "xtalbench"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "cli.py").write_text("def run():\n    from .logic import go\n    return go()\n")
    (pkg / "a" / "logic.py").write_text("TABLE = {'x': 'xtalbench.b'}\nimport json\n")
    (pkg / "b.py").write_text("from xtalbench import c\n")
    (pkg / "c.py").write_text("")
    (pkg / "unused.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    got = {p.relative_to(tmp_path).as_posix() for p in import_closure("xtalbench.a.cli")}
    assert got == {"xtalbench/__init__.py", "xtalbench/a/__init__.py", "xtalbench/a/cli.py",
                   "xtalbench/a/logic.py", "xtalbench/b.py", "xtalbench/c.py"}


def test_a_missing_dep_is_reported(tmp_path) -> None:
    """Drop `src/xtalbench/core` from the fetch stage: the check must name core files."""
    body = dict(stage_definitions(ROOT / "dvc.yaml")["fetch"])
    body["deps"] = [d for d in body["deps"] if d != "src/xtalbench/core"]
    missing = uncovered(ROOT / "dvc.yaml", "fetch", body)
    assert "src/xtalbench/core/schema.py" in missing


def test_package_root_init_holds_no_code() -> None:
    """NOT_A_DEP is safe only while xtalbench/__init__.py imports and computes nothing."""
    tree = ast.parse((SRC / "xtalbench" / "__init__.py").read_text())
    for node in tree.body:
        assert isinstance(node, (ast.Expr, ast.Assign)), ast.dump(node)
        if isinstance(node, ast.Assign):
            assert isinstance(node.value, ast.Constant)


def test_no_stage_names_a_dataset_by_hand() -> None:
    """Per-dataset paths come from foreach/matrix over params, never a literal dataset name."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    names = set(params["datasets"])
    for name, body in stage_definitions(ROOT / "dvc.yaml").items():
        for field in ("deps", "outs", "metrics", "plots"):
            for entry in body.get(field, []) or []:
                path = entry if isinstance(entry, str) else next(iter(entry))
                parts = set(Path(path).parts) | {Path(path).stem}
                assert not parts & names, f"{name}.{field}: {path} names a dataset; use ${{key}}/${{item}}"


def test_a_dataset_added_to_params_reaches_every_stage(tmp_path) -> None:
    """DVC itself resolves a copy of dvc.yaml with one more dataset: the new dataset gets its
    per-dataset stages and the report stage depends on them, with dvc.yaml unchanged."""
    from dvc.repo import Repo

    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["datasets"]["newset"] = {"source": "local", "path": "data/newset"}
    for section in ("train", "evaluate"):
        params[section]["datasets"] = [*params[section]["datasets"], "newset"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    repo = Repo.init(tmp_path, no_scm=True)
    try:
        graph = repo.index.graph
        by_name = {stage.name: stage for stage in graph.nodes}
        for stage in ("fetch", "dedup", "featurize", "split", "train"):
            assert f"{stage}@newset" in by_name, sorted(by_name)
        import networkx as nx

        upstream = {s.name for s in nx.descendants(graph, by_name["report"])}  # DVC edges point to deps
        assert {"report-inputs@newset", "split@newset", "fetch@newset", "evaluate@newset-chgnet", "train@newset"} <= upstream
    finally:
        repo.close()


# --- report: per-dataset digests, and a fresh clone keeps its committed cards -------------------


def _report_tree(root: Path) -> Path:
    """A clone's git-tracked part: metrics and a committed card, no DVC outputs."""
    (root / "metrics" / "toy").mkdir(parents=True)
    (root / "metrics" / "toy" / "fetch.json").write_text('{"read": 3, "kept": 3, "quarantined": 0}\n')
    (root / "reports").mkdir()
    (root / "reports" / "toy_card.md").write_text("# toy\n\ncommitted figures\n")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({"datasets": {"toy": {"source": "local", "path": "toy"}}, "gates": []}))
    return params


def test_report_refuses_to_overwrite_cards_whose_inputs_a_fresh_clone_lacks(tmp_path, capsys) -> None:
    from xtalbench.cli import main

    params = _report_tree(tmp_path)
    assert main(["report", "--root", str(tmp_path), "--params", str(params)]) == 2
    assert (tmp_path / "reports" / "toy_card.md").read_text() == "# toy\n\ncommitted figures\n"
    err = capsys.readouterr().err
    assert "DATA_VERSION.json" in err and "split_card.json" in err and "dvc pull" in err
    # asked for explicitly, the card is rewritten and says what is missing
    assert main(["report", "toy", "--root", str(tmp_path), "--params", str(params), "--allow-missing"]) == 0
    assert "not computed" in (tmp_path / "reports" / "toy_card.md").read_text()


def test_report_digest_covers_the_inputs_but_not_the_reports_own_summary(tmp_path) -> None:
    import hashlib
    import json

    from xtalbench.cli import main

    params = _report_tree(tmp_path)
    (tmp_path / "splits" / "toy").mkdir(parents=True)
    (tmp_path / "splits" / "toy" / "random.parquet").write_bytes(b"PAR1 made-up bytes")
    (tmp_path / "metrics" / "toy" / "summary.json").write_text("{}\n")  # the report's own output

    def digest() -> dict:
        assert main(["report", "--digest", "toy", "--root", str(tmp_path), "--params", str(params)]) == 0
        return json.loads((tmp_path / "report_inputs" / "toy.json").read_text())["files"]

    first = digest()
    assert first == {
        "metrics/toy/fetch.json": hashlib.md5(b'{"read": 3, "kept": 3, "quarantined": 0}\n').hexdigest(),
        "splits/toy/random.parquet": hashlib.md5(b"PAR1 made-up bytes").hexdigest(),
    }
    (tmp_path / "metrics" / "toy" / "summary.json").write_text('{"changed": true}\n')
    assert digest() == first
    (tmp_path / "splits" / "toy" / "random.parquet").write_bytes(b"PAR1 other bytes")
    assert digest()["splits/toy/random.parquet"] != first["splits/toy/random.parquet"]


def test_report_inputs_stage_deps_are_what_the_digest_covers() -> None:
    """Every data dep of report-inputs@<d> is digested, and nothing digested is left undeclared."""
    from xtalbench.report.inputs import INPUTS

    deps = stage_definitions(ROOT / "dvc.yaml")["report-inputs"]["deps"]
    data_deps = {d.replace("${key}", "{d}") for d in deps if not d.startswith("src/")}
    assert data_deps == set(INPUTS)
