"""What the report reads for one dataset: a digest for DVC, and a guard for fresh clones.

`dvc.yaml` runs `xtalbench report --digest <d>` once per dataset (`report-inputs@<d>`, a
`foreach` over params.yaml `datasets`): it writes `report_inputs/<d>.json`, the md5 of every
file the report reads for that dataset. The report stage depends on the `report_inputs` folder,
so a dataset added to params.yaml reaches the report without editing dvc.yaml, and the report
never depends on the whole `metrics/` or `datasets/` folders, where pipelines/*/ write too.

In a fresh clone the git-tracked metrics are there but the DVC outputs (`splits/`,
`DATA_VERSION.json`) are not: `missing_for_existing_cards` lets the CLI refuse to overwrite a
committed card with "not computed" until `dvc pull` or `dvc repro` has brought them back.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

DIGEST_DIR = "report_inputs"
# What the report reads for one dataset, files or folders (`{d}` = the dataset): the site's
# figures are in plots/, its hover text (material id, formula) in dedup.parquet. dvc.yaml's
# report-inputs deps are exactly these (tests/test_dvc_deps.py checks it).
INPUTS = ("metrics/{d}", "splits/{d}", "plots/{d}", "datasets/{d}/DATA_VERSION.json", "datasets/{d}/dedup.parquet")
# Written by the report itself: not an input (digesting it would make the digest chase its tail).
OWN_OUTPUTS = ("metrics/{d}/summary.json",)


def input_files(dataset: str, root: str | Path = ".") -> list[Path]:
    """Every file the report reads for `dataset` that exists, sorted."""
    root = Path(root)
    own = {root / p.format(d=dataset) for p in OWN_OUTPUTS}
    files: set[Path] = set()
    for pattern in INPUTS:
        path = root / pattern.format(d=dataset)
        if path.is_file():
            files.add(path)
        elif path.is_dir():
            files.update(p for p in path.rglob("*") if p.is_file())
    return sorted(files - own)


def digest(dataset: str, root: str | Path = ".") -> dict[str, Any]:
    """{"dataset", "files": {relative path: md5}} of the report's inputs for `dataset`."""
    root = Path(root)
    return {
        "dataset": dataset,
        "files": {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in input_files(dataset, root)},
    }


def write_digest(dataset: str, root: str | Path = ".") -> Path:
    from xtalbench.core.project import write_json

    return write_json(digest(dataset, root), Path(root) / DIGEST_DIR / f"{dataset}.json")


def required_inputs(dataset: str, root: str | Path = ".") -> list[Path]:
    """DVC outputs a dataset card is built from (absent in a fresh clone before `dvc pull`)."""
    root = Path(root)
    return [root / "datasets" / dataset / "DATA_VERSION.json", root / "splits" / dataset / "split_card.json"]


def missing_for_existing_cards(datasets: list[str], root: str | Path = ".", reports_dir: str = "reports") -> dict[str, list[Path]]:
    """Datasets whose card exists but whose required inputs do not: card path → missing files."""
    root = Path(root)
    out = {}
    for dataset in datasets:
        card = root / reports_dir / f"{dataset}_card.md"
        missing = [p for p in required_inputs(dataset, root) if not p.exists()]
        if card.exists() and missing:
            out[str(card)] = missing
    return out
