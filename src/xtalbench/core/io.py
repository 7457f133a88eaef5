"""Atomic stage outputs, readers that name the file, and one warnings summary per stage.

**Every stage writes its outputs through `StageOutputs`** (the one mechanism; new stages adopt it
the same way)::

    from xtalbench.core.io import StageOutputs

    with StageOutputs(f"fetch {dataset}") as out:
        write_parquet(table, out.path(paths.frames))          # a temporary sibling of the target
        with RowGroupWriter(out.path(paths.quarantine), schema) as sink: ...
        model_dir = out.dir(paths.models_dir / "mace")       # a whole folder, swapped in at once
        write_json(metrics, out.path(paths.metrics("fetch")))  # under metrics/: moved last
    # here, and only here, every target has been replaced (data first, metrics last)

- `out.path(target)` returns a temporary file beside `target` (same folder, so the same
  filesystem and `os.replace` is atomic); `out.dir(target)` a temporary folder. Nothing is moved
  until the `with` block ends without an exception; then each temporary is fsynced and renamed
  onto its target, data outputs first in registration order, then metrics (anything under
  `metrics/`, `DATA_VERSION.json`, or registered with `metrics=True`).
- An exception, Ctrl-C (KeyboardInterrupt) or SIGTERM (turned into `SystemExit(143)` while the
  block runs in the main thread) removes the temporaries: the previous outputs stay untouched.
  A signal is also remembered: if library code swallowed the KeyboardInterrupt (a bare `except:`)
  and the stage ran on, the commit is refused all the same. The renames of a commit itself hold
  SIGINT/SIGTERM until they are done.
  After SIGKILL the temporaries of the dead process are left; the next `StageOutputs` that
  registers the same target removes them. A half-written table never carries the target's name.
- A target registered but never written is an error (the stage is incomplete): nothing is moved.
- Third-party warnings raised inside the block are counted (`out.warnings`) and printed once as
  a summary on exit, not streamed (see `WarningSummary`).

Readers: `open_parquet`, `read_parquet` and `iter_parquet` raise `InputError` naming the file and
the cause (missing, truncated, corrupted) instead of pyarrow's bare message; `expect_rows`
refuses an input whose row count disagrees with what its producer's metrics recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import threading
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from xtalbench.core.errors import InputError, XtalbenchError

TMP_MARK = ".xtalbench-tmp-"
METRIC_NAMES = ("DATA_VERSION.json",)


class StageOutputError(XtalbenchError, RuntimeError):
    """A stage that did not produce every output it declared (nothing was moved into place)."""


# --- atomic writes ------------------------------------------------------------------------


def temp_sibling(target: str | Path, kind: str = "tmp") -> Path:
    """A fresh hidden name beside `target`: `.<name>.xtalbench-tmp-<pid>-<random><suffix>`.

    It keeps the target's suffix (writers such as matplotlib pick the format from it) and starts
    with the target's name, so `remove_stale(target)` finds it after a SIGKILL."""
    target = Path(target)
    token = uuid.uuid4().hex[:8]
    suffix = target.suffix if kind == "tmp" else f".{kind}"
    if TMP_MARK in target.name:  # a writer's temporary inside a StageOutputs temporary: same prefix
        return target.with_name(f"{target.name}-{kind}{token}{suffix}")
    return target.parent / f".{target.name}{TMP_MARK}{os.getpid()}-{token}{suffix}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(target: str | Path) -> list[Path]:
    """Remove temporaries of `target` left by processes that no longer run (SIGKILL, power loss)."""
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    prefix = f"{target.name}{TMP_MARK}"  # after the leading dot(s): writers' own temporaries add one
    for candidate in target.parent.iterdir():
        name = candidate.name.lstrip(".")
        if not candidate.name.startswith(".") or not name.startswith(prefix):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and _pid_alive(int(pid)):
            continue
        _remove(candidate)
        removed.append(candidate)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _fsync(path: Path) -> None:
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file():
                _fsync(child)
        return
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _move_into_place(temp: Path, target: Path) -> None:
    """Rename `temp` onto `target`: atomic for files; for folders the old one is moved aside first."""
    if temp.is_dir():
        old = None
        if target.exists():
            old = temp_sibling(target, "old")
            os.replace(target, old)
        os.replace(temp, target)
        if old is not None:
            _remove(old)
    else:
        os.replace(temp, target)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Write one file atomically: yields a temporary sibling, renamed onto `target` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_sibling(target)
    try:
        yield temp
        if not temp.exists():
            raise StageOutputError(f"{target}: the writer produced no file")
        _fsync(temp)
        _move_into_place(temp, target)
    except BaseException:
        _remove(temp)
        raise


class StageOutputs:
    """All outputs of one stage run, moved into place together when the run completes.

    See the module docstring for the contract. `name` labels messages ("dedup mp20").
    `summarise_warnings=False` leaves warnings alone (e.g. when the caller collects them itself).
    """

    def __init__(self, name: str, *, summarise_warnings: bool = True, stream=None):
        self.name = name
        self._entries: list[tuple[Path, Path, bool, bool]] = []  # (target, temp, is_metrics, optional)
        self._warnings_cm = collect_warnings(name, stream=stream) if summarise_warnings else None
        self.warnings: WarningSummary | None = None
        self._old_handlers: dict[int, Any] = {}
        self._interrupted: int | None = None  # a signal seen while the block ran
        self.committed: list[Path] = []

    # registration -------------------------------------------------------------------------
    def path(self, target: str | Path, *, metrics: bool | None = None, optional: bool = False) -> Path:
        """A temporary file to write `target`'s content to (moved onto `target` on success)."""
        return self._register(Path(target), directory=False, metrics=metrics, optional=optional)

    def dir(self, target: str | Path, *, metrics: bool | None = None, optional: bool = False, create: bool = True) -> Path:
        """A temporary folder that replaces the folder `target` as a whole. `create=False` leaves
        it to the writer to create (with `optional=True`: an output the run may not produce)."""
        return self._register(Path(target), directory=create, metrics=metrics, optional=optional)

    def _register(self, target: Path, *, directory: bool, metrics: bool | None, optional: bool) -> Path:
        for known, temp, *_ in self._entries:
            if known == target:
                return temp
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(target)
        temp = temp_sibling(target)
        if directory:
            temp.mkdir()
        if metrics is None:
            metrics = "metrics" in target.parts or target.name in METRIC_NAMES
        self._entries.append((target, temp, metrics, optional))
        return temp

    def temp_of(self, target: str | Path) -> Path:
        """The temporary registered for `target` (KeyError if none)."""
        for known, temp, *_ in self._entries:
            if known == Path(target):
                return temp
        raise KeyError(str(target))

    @property
    def targets(self) -> list[Path]:
        return [target for target, *_ in self._entries]

    # context ------------------------------------------------------------------------------
    def __enter__(self) -> StageOutputs:
        if self._warnings_cm is not None:
            self.warnings = self._warnings_cm.__enter__()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old = signal.getsignal(sig)
                if old is not signal.SIG_IGN:  # an ignored signal (nohup) stays ignored
                    self._old_handlers[sig] = old
                    signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: Any) -> None:
        """Remember the interrupt (so that the outputs are never committed, even when library
        code swallows the KeyboardInterrupt, as bare `except:` around optional imports do), then
        act as before: KeyboardInterrupt for SIGINT, SystemExit(143) for SIGTERM."""
        self._interrupted = signum
        if signum == signal.SIGTERM:
            raise SystemExit(128 + signal.SIGTERM)
        old = self._old_handlers.get(signum)
        if callable(old):
            old(signum, frame)
        raise KeyboardInterrupt

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.commit()
        except BaseException:
            self.discard()
            raise
        finally:
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)
            self._old_handlers = {}
            if self._warnings_cm is not None:
                self._warnings_cm.__exit__(None, None, None)
        if exc_type is not None:
            self.discard()

    def commit(self) -> list[Path]:
        """Check every temporary is complete, then move data outputs, then metrics, into place."""
        if self._interrupted is not None:
            raise KeyboardInterrupt(f"{self.name}: interrupted by signal {self._interrupted} (the interrupt was caught by "
                                    "library code and the run went on): outputs not committed, previous outputs kept")
        missing = [str(t) for t, temp, _, optional in self._entries if not optional and not temp.exists()]
        if missing:
            raise StageOutputError(f"{self.name}: outputs not written: {', '.join(missing)} (previous outputs kept)")
        todo = [e for e in self._entries if e[1].exists()]
        for _, temp, *_ in todo:
            _fsync(temp)
        with _signals_deferred():  # a Ctrl-C now would leave some outputs new and some old
            for target, temp, _, _ in [e for e in todo if not e[2]] + [e for e in todo if e[2]]:
                _move_into_place(temp, target)
                self.committed.append(target)
            self._entries = []
        return self.committed

    def discard(self) -> None:
        """Remove every temporary; targets are left as they were."""
        for _, temp, *_ in self._entries:
            _remove(temp)
        self._entries = []


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the few renames of a commit; act on them afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if signal.SIGINT in pending:
        raise KeyboardInterrupt
    if signal.SIGTERM in pending:
        raise SystemExit(128 + signal.SIGTERM)


# --- readers that name the file -----------------------------------------------------------


def _unreadable(path: Path, error: BaseException) -> InputError:
    return InputError(path, f"not a readable Parquet file: truncated or corrupted ({type(error).__name__}: {error}); "
                            "re-run the stage that writes it (dvc repro)")


def open_parquet(path: str | Path) -> pq.ParquetFile:
    """`pyarrow.parquet.ParquetFile` of `path`, or an `InputError` naming the file and the cause."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist: run the stage that writes it first (dvc repro)")
    if path.is_dir():
        raise InputError(path, "is a folder, expected a Parquet file")
    try:
        return pq.ParquetFile(path, pre_buffer=False)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise _unreadable(path, error) from error


def iter_parquet(path: str | Path, columns: Sequence[str] | None = None, batch_size: int = 10_000) -> Iterator[pa.RecordBatch]:
    """Stream record batches; a corrupted page mid-file raises `InputError` naming the file."""
    path = Path(path)
    handle = open_parquet(path)
    _check_columns(path, handle, columns)
    try:
        yield from handle.iter_batches(batch_size=batch_size, columns=None if columns is None else list(columns))
    except (pa.ArrowException, OSError) as error:
        raise _unreadable(path, error) from error


def read_parquet(path: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """The whole table (or `columns`), or an `InputError` naming the file and the cause."""
    path = Path(path)
    handle = open_parquet(path)
    _check_columns(path, handle, columns)
    try:
        return handle.read(columns=None if columns is None else list(columns))
    except (pa.ArrowException, OSError) as error:
        raise _unreadable(path, error) from error


def parquet_rows(path: str | Path) -> int:
    """Row count from the footer (cheap), or an `InputError`."""
    return open_parquet(path).metadata.num_rows


def _check_columns(path: Path, handle: pq.ParquetFile, columns: Sequence[str] | None) -> None:
    if columns is None:
        return
    names = handle.schema_arrow.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise InputError(path, f"lacks column(s) {missing} (has: {', '.join(names)})")


def read_json(path: str | Path) -> Any:
    """A JSON file, or an `InputError` naming it (missing, truncated, not JSON)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "does not exist: run the stage that writes it first (dvc repro)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(path, f"not valid JSON ({error})") from error


def expect_rows(path: str | Path, metrics_path: str | Path, key: str | Sequence[str]) -> int:
    """Refuse `path` when its row count differs from `metrics_path[key]` (its producer's record).

    `key` is a dotted path (``"kept.frames"``) or a sequence of keys. Without the metrics file
    (a table made by hand, `--input`) nothing is compared. Returns the row count."""
    path, metrics_path = Path(path), Path(metrics_path)
    rows = parquet_rows(path)
    if not metrics_path.exists():
        return rows
    value: Any = read_json(metrics_path)
    keys = key.split(".") if isinstance(key, str) else list(key)
    for part in keys:
        if not isinstance(value, dict) or part not in value:
            raise InputError(metrics_path, f"has no {'.'.join(keys)!r}: cannot check {path}")
        value = value[part]
    if int(value) != rows:
        raise InputError(
            path,
            f"has {rows} rows but {metrics_path} records {'.'.join(keys)} = {value}: the two come from different "
            "or interrupted runs; re-run the stage that writes them (dvc repro)",
        )
    return rows


# --- warnings -----------------------------------------------------------------------------

_QUIET = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
_NUMBER = re.compile(r"\d+(\.\d+)?")


class WarningSummary:
    """Warnings counted by (category, origin package, message prefix with numbers as '#')."""

    def __init__(self, name: str):
        self.name = name
        self.counts: Counter[tuple[str, str, str]] = Counter()

    def add(self, message: Warning | str, category: type[Warning], filename: str) -> None:
        text = str(message).strip().splitlines()[0] if str(message).strip() else ""
        head = text.split(": ", 1)[0]  # "Possible issue in CIF file at line: <varies>" → one kind
        prefix = _NUMBER.sub("#", head if len(head) >= 12 else text)[:100]
        self.counts[(category.__name__, _origin(filename), prefix)] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        """`{"Category [package]: prefix": count}`, most frequent first (for JSON outputs)."""
        items = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return {f"{cat} [{origin}]: {prefix}": n for (cat, origin, prefix), n in items}

    def render(self, top: int = 10) -> str:
        if not self.counts:
            return ""
        lines = [f"{self.name}: {self.total} warning(s), summarised (not shown one by one):"]
        items = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        for (cat, origin, prefix), n in items[:top]:
            lines.append(f"  {n:>7} x {cat} [{origin}]: {prefix}")
        if len(items) > top:
            lines.append(f"  ... and {len(items) - top} other kind(s), {sum(n for _, n in items[top:])} warning(s)")
        return "\n".join(lines)


def _origin(filename: str) -> str:
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            index = parts.index(marker)
            if index + 1 < len(parts):
                return parts[index + 1].removesuffix(".py")
    if "xtalbench" in parts:
        return "xtalbench"
    return Path(filename).stem


@contextlib.contextmanager
def collect_warnings(name: str, stream=None) -> Iterator[WarningSummary]:
    """Count every warning raised inside the block (each occurrence, not once per location) and
    print one summary to `stream` (stderr) at the end. Deprecation/import/resource warnings stay
    ignored as Python does by default; filters set inside the block (`catch_warnings`) win."""
    summary = WarningSummary(name)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        for category in _QUIET:
            warnings.simplefilter("ignore", category)

        def show(message, category, filename, lineno, file=None, line=None):
            summary.add(message, category, filename)

        warnings.showwarning = show
        try:
            yield summary
        finally:
            text = summary.render()
            if text:
                print(text, file=stream or sys.stderr)


class TempParquetWriter:
    """A ParquetWriter on a temporary sibling of `path`: `close()` writes what is buffered and
    renames the file onto `path`; `abort()` (or leaving a `with` block on an exception) removes
    it, so `path` never holds a partial table and keeps its previous content on failure.
    Subclasses buffer rows their own way and write them in `_flush`."""

    def __init__(self, path: str | Path, schema: pa.Schema):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.rows = 0
        self._temp = temp_sibling(self.path)
        self._writer = pq.ParquetWriter(self._temp, schema, compression="zstd")

    def _flush(self) -> None:
        """Write what is still buffered."""

    def close(self) -> None:
        try:
            self._flush()
            self._writer.close()
        except BaseException:  # a last batch that cannot be written: no temporary left behind
            self.abort()
            raise
        _fsync(self._temp)
        os.replace(self._temp, self.path)

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self._temp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

