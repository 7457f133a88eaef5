"""`xtalbench query "<SQL>"`: DuckDB over the Parquet artifacts (see xtalbench.tools.query for view names)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sql", nargs="?", help='e.g. "select count(*) from mp20"')
    parser.add_argument("--views", action="store_true", help="list the views and the files behind them")


def run(args: argparse.Namespace) -> int:
    import duckdb

    from xtalbench.tools.query import artifact_views, format_table, run_query

    if args.views or not args.sql:
        for name, path in artifact_views().items():
            print(f"{name:40s} {path}")
        return 0
    try:
        columns, rows = run_query(args.sql)
    except duckdb.Error as error:
        raise SystemExit(f"query failed: {error}") from None
    print(format_table(columns, rows))
    return 0
