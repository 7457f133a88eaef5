"""Run a model in a worker process (inside its own environment), Arrow IPC over stdin/stdout.

Client side: `EnvPredictor(spec, python=...)` starts `<python> -m xtalbench.models.worker` with
xtalbench's `src/` on PYTHONPATH (xtalbench is not installed in model environments), sends the
spec once (`load`), then one `predict` message per call: the frames' structure columns as an
Arrow IPC stream; the reply is an Arrow table of energy / flattened forces / Voigt stress.

Framing: every message is `<u64 header length><u64 body length>` + a JSON header + the body
(Arrow IPC stream bytes, or empty). The worker keeps the protocol on a private copy of its
stdout and points fd 1 at stderr, so a library that prints cannot corrupt the stream. The
worker's stderr goes to a log file; when the worker dies, `ModelWorkerError` quotes its tail.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa

from xtalbench.core.errors import XtalbenchError
from xtalbench.models.base import (
    STRUCTURE_COLUMNS,
    ModelLoadError,
    Predictor,
    Rows,
    UnsupportedElementError,
    as_rows,
    check_elements,
)

SRC = Path(__file__).resolve().parents[2]  # .../src: what the worker imports xtalbench from
_HEAD = struct.Struct("<QQ")
RESULT_SCHEMA = pa.schema(
    [("energy", pa.float64()), ("forces", pa.list_(pa.float64())), ("stress", pa.list_(pa.float64(), 6))]
)
FRAME_SCHEMA = pa.schema(
    [("frame_id", pa.string()), ("numbers", pa.list_(pa.int64())), ("positions", pa.list_(pa.float64())),
     ("lattice", pa.list_(pa.float64())), ("pbc", pa.list_(pa.bool_()))]
)  # fmt: skip


class ModelWorkerError(XtalbenchError, RuntimeError):
    """A model worker that died, could not start or failed; names the model and quotes its log."""


# --- framing ------------------------------------------------------------------------------


def send(stream: IO[bytes], header: Mapping[str, Any], table: pa.Table | None = None) -> None:
    head = json.dumps(header).encode()
    body = b""
    if table is not None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        body = sink.getvalue().to_pybytes()
    stream.write(_HEAD.pack(len(head), len(body)) + head + body)
    stream.flush()


def _read_exactly(stream: IO[bytes], n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv(stream: IO[bytes]) -> tuple[dict[str, Any], pa.Table | None] | None:
    """One message, or None at end of stream (the other side closed or died)."""
    head = _read_exactly(stream, _HEAD.size)
    if head is None:
        return None
    n_head, n_body = _HEAD.unpack(head)
    header_bytes = _read_exactly(stream, n_head)
    body = _read_exactly(stream, n_body) if n_body else b""
    if header_bytes is None or body is None:
        return None
    table = pa.ipc.open_stream(pa.py_buffer(body)).read_all() if n_body else None
    return json.loads(header_bytes), table


# --- tables <-> predictions ---------------------------------------------------------------


def frames_table(rows: Rows) -> pa.Table:
    return pa.Table.from_pylist([{k: r[k] for k in STRUCTURE_COLUMNS} for r in rows], schema=FRAME_SCHEMA)


def result_table(result: Mapping[str, Any], n: int) -> pa.Table:
    forces = result.get("forces")
    if forces is None:
        forces_col = pa.nulls(n, pa.list_(pa.float64()))
    else:
        sizes = np.array([np.size(f) for f in forces], dtype=np.int32)
        offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32))
        flat = np.concatenate([np.asarray(f, dtype=np.float64).ravel() for f in forces]) if n else np.zeros(0)
        forces_col = pa.ListArray.from_arrays(offsets, pa.array(flat, pa.float64()))
    stress = result.get("stress")
    if stress is None:
        stress_col = pa.nulls(n, pa.list_(pa.float64(), 6))
    else:
        flat_s = pa.array(np.asarray(stress, dtype=np.float64).reshape(-1), pa.float64())
        stress_col = pa.FixedSizeListArray.from_arrays(flat_s, 6)
    energy = pa.array(np.asarray(result["energy"], dtype=np.float64), pa.float64())
    return pa.Table.from_arrays([energy, forces_col, stress_col], schema=RESULT_SCHEMA)


def result_from_table(table: pa.Table, rows: Rows) -> dict[str, Any]:
    energy = table["energy"].to_numpy()
    forces_col = table["forces"].combine_chunks()
    forces = None
    if forces_col.null_count < len(forces_col) or not len(forces_col):
        flat = forces_col.values.to_numpy(zero_copy_only=False)
        offsets = forces_col.offsets.to_numpy()
        forces = [flat[offsets[i] : offsets[i + 1]].reshape(-1, 3) for i in range(len(rows))]
    stress_col = table["stress"].combine_chunks()
    stress = None
    if len(stress_col) and stress_col.null_count < len(stress_col):
        stress = stress_col.values.to_numpy(zero_copy_only=False).reshape(-1, 6).copy()
    elif not len(stress_col):
        stress = np.zeros((0, 6))
    return {"energy": np.asarray(energy, dtype=np.float64), "forces": forces, "stress": stress}


# --- client ---------------------------------------------------------------------------------


class EnvPredictor(Predictor):
    """A model served by a worker process, behind the Predictor interface.

    `python`: the interpreter of the model's environment (default: the spec's built environment;
    `sys.executable` runs the worker in this environment, which is how the overhead is measured).
    """

    def __init__(self, spec: Any, python: str | Path | None = None, device: str = "cpu", dtype: str | None = None,
                 checkpoint: str | Path | None = None, progress: bool = True, startup_timeout: float = 600.0,
                 **options: Any):  # fmt: skip
        from xtalbench.models.registry import spec_data

        super().__init__(spec.name, device=device, dtype=dtype or spec.defaults.get("dtype") or "float64", progress=progress)
        if SRC.name != "src":  # a non-editable install: SRC is the main site-packages, whose stack would shadow the worker's
            raise ModelWorkerError(f"model {spec.name!r}: a worker needs xtalbench's source tree on its path, found {SRC}: "
                                   "install xtalbench editable (`pip install -e .`, as `make install` does)")
        if python is None:
            from xtalbench.models.env import python_of, require_environment

            python = python_of(require_environment(spec.environment, spec.name))
        self.python = Path(python)
        self.spec = spec
        self._log_dir = tempfile.TemporaryDirectory(prefix=f"xtalbench-worker-{spec.name}-")
        self.log_path = Path(self._log_dir.name) / "worker.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
        env["XTALBENCH_WORKER"] = "1"
        env.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
        env.pop("VIRTUAL_ENV", None)
        self._log = self.log_path.open("wb")
        try:
            self.process = subprocess.Popen(
                [str(self.python), "-m", "xtalbench.models.worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env, cwd=os.getcwd(),
            )  # fmt: skip
        except OSError as error:
            raise ModelWorkerError(f"model {spec.name!r}: cannot start a worker with {self.python}: {error}") from error
        reply = self._call(
            {"op": "load", "spec": spec_data(spec), "device": self.device, "dtype": self.dtype,
             "checkpoint": None if checkpoint is None else str(checkpoint), "options": options},
        )  # fmt: skip
        self.dtype = reply["dtype"]
        self.supported_numbers = None if reply["supported_numbers"] is None else frozenset(reply["supported_numbers"])
        self.implemented_properties = tuple(reply["implemented_properties"])
        self.batched = bool(reply["batched"])
        self._default_batch = int(reply["default_batch_size"])
        self.worker_info = reply.get("info", {})

    def default_batch_size(self) -> int:
        return self._default_batch

    def _tail(self, lines: int = 15) -> str:
        try:
            self._log.flush()
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def _died(self, what: str) -> ModelWorkerError:
        code = self.process.poll()
        if code is None:
            try:
                code = self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
        tail = self._tail()
        return ModelWorkerError(
            f"model {self.name!r}: the worker ({self.python}) died during {what} (exit code {code}); "
            f"its log {self.log_path} ends with:\n{tail or '(empty)'}"
        )

    def _call(self, header: Mapping[str, Any], table: pa.Table | None = None) -> dict[str, Any]:
        return self._exchange(header, table)[0]

    def _exchange(self, header: Mapping[str, Any], table: pa.Table | None = None) -> tuple[dict[str, Any], pa.Table | None]:
        op = str(header.get("op"))
        if self.process.poll() is not None:
            raise self._died(op)
        try:
            send(self.process.stdin, header, table)  # type: ignore[arg-type]
        except (BrokenPipeError, OSError):
            raise self._died(op) from None
        message = recv(self.process.stdout)  # type: ignore[arg-type]
        if message is None:
            raise self._died(op)
        reply, body = message
        if not reply.get("ok"):
            kind, text = reply.get("type", "Exception"), reply.get("error", "")
            if op == "load":
                raise ModelLoadError(f"model {self.name!r} in {self.python}: {kind}: {text}")
            if kind == "UnsupportedElementError":
                raise UnsupportedElementError(reply.get("frame_id", "?"), reply.get("element", "?"), self.name)
            raise ModelWorkerError(f"model {self.name!r}: the worker failed during {op}: {kind}: {text}")
        return reply, body

    def _predict_batch(self, rows: Rows) -> dict[str, Any]:  # pragma: no cover - predict is overridden
        return self.predict(rows)

    def predict(self, frames: Rows | pa.Table, batch_size: int | None = None) -> dict[str, Any]:
        """One round trip: every frame to the worker, which batches as its backend does."""
        rows = as_rows(frames)
        check_elements(rows, self.supported_numbers, self.name)
        if isinstance(frames, (pa.Table, pa.RecordBatch)):
            table = pa.Table.from_batches([frames]) if isinstance(frames, pa.RecordBatch) else frames
            table = table.select(list(STRUCTURE_COLUMNS)).cast(FRAME_SCHEMA)
        else:
            table = frames_table(rows)
        header = {"op": "predict", "batch_size": batch_size, **_torch_state()}
        t0 = time.perf_counter()
        reply, body = self._exchange(header, table)
        # the worker's own prediction time vs the whole round trip: what the worker costs
        self.last_seconds = (time.perf_counter() - t0, float(reply.get("seconds", 0.0)))
        if body is None or body.num_rows != len(rows):
            raise ModelWorkerError(f"model {self.name!r}: the worker returned {0 if body is None else body.num_rows} rows for {len(rows)} frames")
        return result_from_table(body, rows)

    def close(self) -> None:
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            try:
                send(process.stdin, {"op": "close"})  # type: ignore[arg-type]
                process.stdin.close()  # type: ignore[union-attr]
                process.wait(timeout=10)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: modules may be gone
            self.close()


def _torch_state() -> dict[str, Any]:
    """This process's torch threads and TorchScript optimisation flag, for the worker to mirror."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    state: dict[str, Any] = {"threads": torch.get_num_threads()}
    getter = getattr(torch._C, "_get_graph_executor_optimize", None)
    if getter is not None:
        state["jit_optimize"] = bool(getter())
    return state


# --- worker ---------------------------------------------------------------------------------


def _apply_torch_state(header: Mapping[str, Any]) -> None:
    torch = sys.modules.get("torch")
    if torch is None:
        return
    threads = header.get("threads")
    if threads and torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))
    setter = getattr(torch._C, "_set_graph_executor_optimize", None)
    if setter is not None and "jit_optimize" in header:
        setter(bool(header["jit_optimize"]))


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> int:
    """The worker loop: load once, then predict until `close` or end of input."""
    from xtalbench.models.registry import load_model, parse_spec

    predictor: Predictor | None = None
    while True:
        message = recv(stdin)
        if message is None:
            return 0
        header, table = message
        op = header.get("op")
        try:
            if op == "close":
                send(stdout, {"ok": True})
                return 0
            if op == "load":
                t0 = time.perf_counter()
                spec = parse_spec(header["spec"], header["spec"].get("_source", "<worker>"))
                predictor = load_model(spec, device=header["device"], dtype=header["dtype"], checkpoint=header.get("checkpoint"),
                                       in_process=True, progress=False, **header.get("options", {}))  # fmt: skip
                import platform

                info = {"python": platform.python_version(), "executable": sys.executable, "load_seconds": round(time.perf_counter() - t0, 2)}
                torch = sys.modules.get("torch")
                if torch is not None:
                    info["torch"] = torch.__version__
                send(stdout, {
                    "ok": True, "dtype": predictor.dtype, "batched": predictor.batched,
                    "supported_numbers": None if predictor.supported_numbers is None else sorted(predictor.supported_numbers),
                    "implemented_properties": list(predictor.implemented_properties),
                    "default_batch_size": predictor.default_batch_size(), "info": info,
                })  # fmt: skip
            elif op == "predict":
                if predictor is None or table is None:
                    raise RuntimeError("predict before load, or without frames")
                _apply_torch_state(header)
                t0 = time.perf_counter()
                result = predictor.predict(table, batch_size=header.get("batch_size"))
                send(stdout, {"ok": True, "seconds": time.perf_counter() - t0}, result_table(result, table.num_rows))
            else:
                raise RuntimeError(f"unknown op {op!r}")
        except UnsupportedElementError as error:
            send(stdout, {"ok": False, "type": type(error).__name__, "error": str(error), "frame_id": error.frame_id, "element": error.element})
        except Exception as error:  # noqa: BLE001 - reported to the client, which raises
            import traceback

            traceback.print_exc(file=sys.stderr)
            send(stdout, {"ok": False, "type": type(error).__name__, "error": str(error)})


def main() -> int:
    # the protocol keeps a private copy of stdout; fd 1 then points at stderr (libraries print)
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return serve(sys.stdin.buffer, protocol)  # type: ignore[arg-type]


if __name__ == "__main__":
    raise SystemExit(main())
