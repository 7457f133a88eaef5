"""`xtalbench fetch <dataset>`: run the dataset's source (params.yaml `datasets.<name>`)."""

from __future__ import annotations

import argparse
import json

from xtalbench.core.project import Paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a key of params.yaml `datasets`")


def run(args: argparse.Namespace) -> int:
    from xtalbench.core.params import read_params
    from xtalbench.fetch.params import dataset_entry
    from xtalbench.fetch.sources.local import SourceError
    from xtalbench.fetch.stage import fetch

    entry = dataset_entry(read_params(args.params), args.dataset, args.params)  # typed, per source
    config = entry.as_config()  # the keys the file set: each source applies its own defaults
    try:
        summary = fetch(args.dataset, config, Paths(args.dataset))
    except SourceError as error:
        raise SystemExit(f"fetch {args.dataset}: {error}") from None
    print(json.dumps(summary, indent=2))
    return 0
