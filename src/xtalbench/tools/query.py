"""DuckDB over the Parquet artifacts: one view per dataset and artifact.

Views: `<d>` (frames), `<d>_quarantine`, `<d>_dedup`, `<d>_dedup_clusters`, `<d>_features`,
`<d>_split_<strategy>`, `<d>_predictions_<model>`; `-` in names becomes `_`
(so dataset `mp-frames` is `mp_frames`).
"""

from __future__ import annotations

import re
from pathlib import Path

ARTIFACTS = {
    "": "frames.parquet",
    "_quarantine": "quarantine.parquet",
    "_dedup": "dedup.parquet",
    "_dedup_clusters": "dedup_clusters.parquet",
    "_features": "features.parquet",
}


def view_name(*parts: str) -> str:
    return re.sub(r"[^0-9a-zA-Z_]", "_", "".join(parts))


def artifact_views(root: Path = Path(".")) -> dict[str, Path]:
    """Every Parquet artifact under datasets/ and splits/ with the view name it gets."""
    views: dict[str, Path] = {}
    for data_dir in sorted((root / "datasets").glob("*/")):
        dataset = data_dir.name
        for suffix, filename in ARTIFACTS.items():
            if (data_dir / filename).exists():
                views[view_name(dataset, suffix)] = data_dir / filename
        for path in sorted((data_dir / "predictions").glob("*.parquet")):
            views[view_name(dataset, "_predictions_", path.stem)] = path
    for split_dir in sorted((root / "splits").glob("*/")):
        for path in sorted(split_dir.glob("*.parquet")):
            views[view_name(split_dir.name, "_split_", path.stem)] = path
    return views


def connect(root: Path = Path(".")):
    import duckdb

    connection = duckdb.connect()
    for name, path in artifact_views(root).items():
        connection.execute(f"create view \"{name}\" as select * from read_parquet('{path.as_posix()}')")
    return connection


def run_query(sql: str, root: Path = Path(".")) -> tuple[list[str], list[tuple]]:
    connection = connect(root)
    result = connection.execute(sql)
    columns = [d[0] for d in result.description] if result.description else []
    return columns, result.fetchall()


def format_table(columns: list[str], rows: list[tuple], max_width: int = 60) -> str:
    """A plain aligned text table (long cells cut with …)."""

    def cell(value: object) -> str:
        text = "NULL" if value is None else str(value)
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)
