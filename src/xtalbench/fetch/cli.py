"""`xtalbench fetch <dataset>`: run the dataset's source (params.yaml `datasets.<name>`)."""

from __future__ import annotations

import argparse
import json

from xtalbench.core.project import Paths, dataset_params, load_params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a key of params.yaml `datasets`")


def run(args: argparse.Namespace) -> int:
    from xtalbench.fetch.sources.local import SourceError
    from xtalbench.fetch.stage import fetch

    config = dataset_params(load_params(args.params), args.dataset)
    try:
        summary = fetch(args.dataset, config, Paths(args.dataset))
    except SourceError as error:
        raise SystemExit(f"fetch {args.dataset}: {error}") from None
    print(json.dumps(summary, indent=2))
    return 0
