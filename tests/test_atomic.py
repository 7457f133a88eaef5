"""Atomic stage outputs: all appear together or not at all; readers name the file they cannot read.

The kill tests run the real `xtalbench fetch` / `xtalbench dedup` in a subprocess, interrupt it
(SIGINT, SIGKILL) at a seeded random moment after it started writing, and check the previous
outputs byte for byte, then that a re-run reproduces them byte for byte.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xtalbench.core.errors import InputError, XtalbenchError
from xtalbench.core.io import (
    TMP_MARK,
    StageOutputError,
    StageOutputs,
    expect_rows,
    remove_stale,
)
from xtalbench.core.parallel import RowGroupWriter, map_row_groups
from xtalbench.core.project import ParquetSink, iter_batches, read_table, write_json, write_parquet

SI = 'Lattice="0 2.715 2.715 2.715 0 2.715 2.715 2.715 0" Properties=species:S:1:pos:R:3:forces:R:3 pbc="T T T"'


def temporaries(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if TMP_MARK in p.name)


def snapshot(paths: list[Path]) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in paths}


# --- StageOutputs -------------------------------------------------------------------------


def test_outputs_appear_together_data_first_metrics_last(tmp_path):
    data, metrics = tmp_path / "datasets" / "d" / "frames.parquet", tmp_path / "metrics" / "d" / "fetch.json"
    with StageOutputs("demo", summarise_warnings=False) as out:
        write_json({"rows": 3}, out.path(metrics))  # registered first, still moved last
        write_parquet(pa.table({"a": [1, 2, 3]}), out.path(data))
        assert not data.exists() and not metrics.exists()  # nothing visible before the block ends
    assert out.committed == [data, metrics]
    assert pq.read_table(data).column("a").to_pylist() == [1, 2, 3]
    assert json.loads(metrics.read_text()) == {"rows": 3}
    assert temporaries(tmp_path) == []


def test_a_failed_stage_leaves_previous_outputs_untouched(tmp_path):
    data, metrics = tmp_path / "d" / "dedup.parquet", tmp_path / "metrics" / "dedup.json"
    write_parquet(pa.table({"a": [1, 2]}), data)
    write_json({"kept": 2}, metrics)
    before = snapshot([data, metrics])
    with pytest.raises(ZeroDivisionError), StageOutputs("demo", summarise_warnings=False) as out:
        write_parquet(pa.table({"a": []}, schema=pa.schema([("a", pa.int64())])), out.path(data))  # an empty table...
        write_json({"kept": 0}, out.path(metrics))
        _ = 1 / 0  # ...then the stage fails
    assert snapshot([data, metrics]) == before
    assert temporaries(tmp_path) == []


def test_an_output_declared_but_not_written_commits_nothing(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    with pytest.raises(StageOutputError, match="b.parquet"), StageOutputs("demo", summarise_warnings=False) as out:
        write_parquet(pa.table({"x": [1]}), out.path(a))
        out.path(b)
    assert not a.exists() and not b.exists() and temporaries(tmp_path) == []
    assert issubclass(StageOutputError, XtalbenchError)


def test_a_folder_output_is_replaced_as_a_whole(tmp_path):
    target = tmp_path / "models" / "m"
    target.mkdir(parents=True)
    (target / "old.model").write_text("old")
    with StageOutputs("demo", summarise_warnings=False) as out:
        staged = out.dir(target)
        (staged / "new.model").write_text("new")
        assert (target / "old.model").exists()
    assert sorted(p.name for p in target.iterdir()) == ["new.model"]
    assert temporaries(tmp_path) == []


def test_temporaries_of_a_killed_process_are_removed_on_the_next_run(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    target = tmp_path / "frames.parquet"
    stale = tmp_path / f".frames.parquet{TMP_MARK}{pid}-deadbeef.parquet"
    stale.write_bytes(b"PAR1")
    scratch = tmp_path / f"..frames.parquet{TMP_MARK}{pid}-deadbeef-x1y2"  # a writer's scratch folder of it
    (scratch / "sub").mkdir(parents=True)
    mine = tmp_path / f".frames.parquet{TMP_MARK}{os.getpid()}-cafecafe.parquet"  # a live process's: kept
    mine.write_bytes(b"PAR1")
    other = tmp_path / f".frames.parquet.bak{TMP_MARK}{pid}-deadbeef.parquet"  # another target's: not ours
    other.write_bytes(b"PAR1")
    assert sorted(remove_stale(target)) == sorted([stale, scratch])
    assert not stale.exists() and not scratch.exists() and mine.exists() and other.exists()


def test_sigterm_discards_the_temporaries(tmp_path):
    script = textwrap.dedent(
        f"""
        import time, pathlib
        from xtalbench.core.io import StageOutputs
        with StageOutputs("demo", summarise_warnings=False) as out:
            out.path(pathlib.Path({str(tmp_path)!r}) / "x.json").write_text("partial")
            print("ready", flush=True)
            time.sleep(30)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_writers_never_leave_a_partial_file(tmp_path):
    path = tmp_path / "out.parquet"
    write_parquet(pa.table({"a": [7]}), path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError), RowGroupWriter(path, pa.schema([("a", pa.int64())])) as writer:
        writer.write(pa.table({"a": [1, 2]}))
        raise RuntimeError("interrupted")
    assert path.read_bytes() == before and temporaries(tmp_path) == []

    def boom(table: pa.Table) -> pa.Table:
        raise ValueError("bad chunk")

    # a last buffered batch that cannot be written (fails inside close()): no temporary, old output kept
    with pytest.raises(pa.ArrowInvalid), ParquetSink(path, pa.schema([("a", pa.int64())])) as sink:
        sink.append({"a": "not an int"})
    assert path.read_bytes() == before and temporaries(tmp_path) == []

    with pytest.raises(XtalbenchError, match="bad chunk"):
        map_row_groups(pa.table({"a": [1, 2, 3]}), boom, path, pa.schema([("a", pa.int64())]), progress=False)
    assert path.read_bytes() == before  # the previous output survives a failed map


# --- readers ------------------------------------------------------------------------------


@pytest.fixture
def good_parquet(tmp_path) -> Path:
    path = tmp_path / "frames.parquet"
    write_parquet(pa.table({"frame_id": [f"f{i}" for i in range(5000)], "x": [float(i) for i in range(5000)]}), path, row_group_size=1000)
    return path


@pytest.mark.parametrize("damage", ["truncated", "four_bytes", "empty", "garbage_footer"])
def test_unreadable_parquet_names_the_file_and_the_cause(good_parquet, damage):
    data = good_parquet.read_bytes()
    damaged = {"truncated": data[: len(data) // 2], "four_bytes": b"PAR1", "empty": b"",
               "garbage_footer": data[:-12] + b"\x00" * 12}[damage]  # fmt: skip
    good_parquet.write_bytes(damaged)
    for read in (lambda p: read_table(p), lambda p: list(iter_batches(p))):
        with pytest.raises(InputError) as info:
            read(good_parquet)
        message = str(info.value)
        assert str(good_parquet) in message and "truncated or corrupted" in message


def test_a_corrupted_page_mid_file_names_the_file(good_parquet):
    data = bytearray(good_parquet.read_bytes())
    meta = pq.ParquetFile(good_parquet).metadata
    column = meta.row_group(2).column(1)  # the third row group's `x` page: scribble over it
    start = column.data_page_offset + 20
    data[start : start + 64] = bytes(64)
    good_parquet.write_bytes(bytes(data))
    with pytest.raises(InputError, match="frames.parquet"):
        for _ in iter_batches(good_parquet, batch_size=1000):
            pass


def test_a_missing_input_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_table(tmp_path / "nope.parquet")


def test_row_count_disagreeing_with_the_producer_is_refused(good_parquet, tmp_path):
    metrics = tmp_path / "fetch.json"
    write_json({"kept": 4764}, metrics)
    with pytest.raises(InputError) as info:
        expect_rows(good_parquet, metrics, "kept")
    assert "5000 rows" in str(info.value) and "4764" in str(info.value) and str(metrics) in str(info.value)
    write_json({"kept": {"frames": 5000}}, metrics)
    assert expect_rows(good_parquet, metrics, "kept.frames") == 5000
    assert expect_rows(good_parquet, tmp_path / "absent.json", "kept") == 5000  # no producer record: nothing to compare


# --- real stages, interrupted -------------------------------------------------------------


def write_frames(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w") as handle:
        for _ in range(n):
            d = rng.uniform(-0.2, 0.2)
            handle.write(f"2\n{SI} energy={-10.8 + d:.6f}\nSi {d:.6f} 0 0 0.1 0 0\nSi 1.3575 1.3575 1.3575 -0.1 0 0\n")


def xtalbench(cwd: Path, *argv: str) -> tuple[int, str]:
    """`xtalbench <argv>` in this process (cheap: modules already imported): (exit code, stderr)."""
    import contextlib

    from xtalbench.cli import main

    err = io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(list(argv))
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 2
                err.write(str(exit_.code))
    finally:
        os.chdir(old)
    return code, err.getvalue()


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def interrupt(cwd: Path, argv: list[str], watch: Path, sig: int, rng: random.Random, max_delay: float = 0.05) -> None:
    """Start `xtalbench argv`, wait until it writes its first temporary in `watch`, then send `sig`
    after a random delay; the stage must still be running when the signal lands."""
    old = set(temporaries(watch)) if watch.is_dir() else set()  # a killed run's leftovers do not count
    proc = subprocess.Popen([sys.executable, "-m", "xtalbench", *argv], cwd=cwd, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (watch.is_dir() and set(temporaries(watch)) - old):
        assert proc.poll() is None, "the stage ended before it wrote anything"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, max_delay))
    assert proc.poll() is None, "the stage finished before the signal: make its input larger"
    proc.send_signal(sig)
    assert proc.wait(timeout=60) != 0


def test_interrupted_fetch_keeps_the_previous_outputs_and_a_rerun_is_identical(tmp_path):
    rng = random.Random(11)
    inputs = tmp_path / "frames.extxyz"
    write_frames(inputs, 300, seed=1)
    (tmp_path / "params.yaml").write_text(json.dumps({"datasets": {"d": {"source": "local", "path": "frames.extxyz"}}}))
    code, err = xtalbench(tmp_path, "fetch", "d")
    assert code == 0, err
    data = tmp_path / "datasets" / "d"
    outputs = [data / "frames.parquet", data / "quarantine.parquet", data / "DATA_VERSION.json", tmp_path / "metrics" / "d" / "fetch.json"]
    before = snapshot(outputs)
    write_frames(inputs, 12000, seed=2)  # a new, larger source: the interrupted runs would change every output
    interrupt(tmp_path, ["fetch", "d"], data, signal.SIGINT, rng)
    assert snapshot(outputs) == before
    assert temporaries(tmp_path) == []  # Ctrl-C cleans up after itself
    interrupt(tmp_path, ["fetch", "d"], data, signal.SIGKILL, rng)
    assert snapshot(outputs) == before  # SIGKILL: temporaries may remain, the outputs are intact
    write_frames(inputs, 300, seed=1)
    code, err = xtalbench(tmp_path, "fetch", "d")
    assert code == 0, err
    after = snapshot(outputs)
    for path in outputs[:2] + outputs[3:]:  # DATA_VERSION carries the fetch date
        assert after[str(path)] == before[str(path)], path
    assert temporaries(tmp_path) == []  # the killed run's leftovers are gone


DEDUP = {"level": "structure", "metric": {"structure": "xrd"}, "threshold": {"structure": 0.01}}


def test_interrupted_or_failed_dedup_keeps_the_previous_outputs(tmp_path):
    rng = random.Random(5)
    write_frames(tmp_path / "frames.extxyz", 600, seed=3)
    params = {"datasets": {"d": {"source": "local", "path": "frames.extxyz"}}, "dedup": DEDUP}
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    assert xtalbench(tmp_path, "fetch", "d")[0] == 0
    code, err = xtalbench(tmp_path, "dedup", "d", "--no-progress")
    assert code == 0, err
    data = tmp_path / "datasets" / "d"
    outputs = [data / "dedup.parquet", data / "dedup_clusters.parquet", tmp_path / "metrics" / "d" / "dedup.json"]
    before = snapshot(outputs)
    (tmp_path / "params.yaml").write_text(json.dumps({**params, "dedup": {**DEDUP, "threshold": {"structure": 0.5}}}))
    interrupt(tmp_path, ["dedup", "d", "--no-progress"], data, signal.SIGKILL, rng)
    assert snapshot(outputs) == before
    interrupt(tmp_path, ["dedup", "d", "--no-progress"], data, signal.SIGINT, rng)
    assert snapshot(outputs) == before

    frames = data / "frames.parquet"
    good = frames.read_bytes()
    frames.write_bytes(good[: len(good) // 2])  # a truncated input: refused, naming it; outputs kept
    code, err = xtalbench(tmp_path, "dedup", "d", "--no-progress")
    assert code == 2 and "frames.parquet" in err and "truncated or corrupted" in err
    assert "Traceback" not in err
    write_parquet(pq.read_table(io.BytesIO(good)).slice(0, 4), frames)  # valid, but 4 of 250 rows
    code, err = xtalbench(tmp_path, "dedup", "d", "--no-progress")
    assert code == 2 and "has 4 rows" in err and "fetch.json" in err
    assert snapshot(outputs) == before

    frames.write_bytes(good)
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    code, err = xtalbench(tmp_path, "dedup", "d", "--no-progress")
    assert code == 0, err
    assert snapshot(outputs) == before  # byte-identical re-run
    assert temporaries(tmp_path) == []
