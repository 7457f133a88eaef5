"""`xtalbench featurize <dataset>`: SOAP (+ composition) vectors → datasets/<name>/features.parquet."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xtalbench.core.project import Paths, dataset_params, load_params, write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a key of params.yaml `datasets`")
    parser.add_argument("--input", default=None, help="frames Parquet to featurize (default: datasets/<name>/dedup.parquet)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from xtalbench.core.parallel import compute_options
    from xtalbench.featurize.stage import featurize_file

    params = load_params(args.params)
    dataset_params(params, args.dataset)
    paths = Paths(args.dataset)
    source = Path(args.input) if args.input else paths.dedup
    if not source.exists():
        raise SystemExit(f"{source} does not exist: run `xtalbench dedup {args.dataset}` first (or pass --input)")
    compute = compute_options(params)
    compute.pop("chunk_rows")  # featurize sets its own chunk size (wide rows)
    summary = featurize_file(
        source,
        paths.features,
        params.get("featurize") or {},
        quarantine=paths.data_dir / "featurize_quarantine.parquet",
        compute=compute,
        progress=not args.no_progress,
    )
    write_json(summary, paths.metrics("featurize"))
    print(json.dumps({k: v for k, v in summary.items() if k != "soap"}, indent=2))
    return 0
