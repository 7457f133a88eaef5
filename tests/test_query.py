"""`xtalbench query`: DuckDB views over the artifacts."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from xtalbench.cli import main
from xtalbench.core.project import write_parquet
from xtalbench.tools.query import artifact_views, run_query


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_parquet(pa.table({"frame_id": ["a", "b", "c"], "nsites": [1, 2, 3]}), Path("datasets/mp-frames/frames.parquet"))
    write_parquet(pa.table({"record": ["d"], "field": ["forces"]}), Path("datasets/mp-frames/quarantine.parquet"))
    write_parquet(pa.table({"frame_id": ["a", "b"], "fold": [0, 0], "role": ["train", "test"]}), Path("splits/mp-frames/loco.parquet"))
    return tmp_path


def test_views_cover_datasets_and_splits(artifacts):
    assert set(artifact_views()) == {"mp_frames", "mp_frames_quarantine", "mp_frames_split_loco"}
    columns, rows = run_query("select sum(nsites) as atoms from mp_frames")
    assert columns == ["atoms"] and rows == [(6,)]
    _, rows = run_query("select f.frame_id from mp_frames f join mp_frames_split_loco s using (frame_id) where role = 'test'")
    assert rows == [("b",)]


def test_cli_prints_table_and_reports_sql_errors(artifacts, capsys):
    assert main(["query", "select count(*) as n from mp_frames"]) == 0
    out = capsys.readouterr().out
    assert "n" in out.splitlines()[0] and out.splitlines()[2].strip() == "3"
    with pytest.raises(SystemExit, match="query failed"):
        main(["query", "select * from no_such_view"])
