"""Cost estimate of a pipeline: time and peak memory per stage, before running it.

Reads the pipeline's `dvc.yaml` (which stages) and its params (datasets, their sizes, models,
device, compute), and the throughputs measured on a reference machine in
`benchmarks/throughputs.json` (each figure names where it was measured). Time models are
simple on purpose: a stage costs `fixed_seconds + rows / rate`, divided by the Dask workers
for the stages that map over chunks, and by an *assumed* GPU speed-up factor for the stages
that run models when the device is CUDA. Memory is a measured constant for the streaming
stages and `base_mb + rows × mb_per_row` for the ones that hold a matrix (split).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xtalbench.core.errors import XtalbenchError

DEFAULT_THROUGHPUTS = Path(__file__).resolve().parents[3] / "benchmarks" / "throughputs.json"  # src/xtalbench/tools/plan.py → repo


class PlanError(XtalbenchError, ValueError):
    """A pipeline, stage, dataset or model the estimate cannot cover; says which and why."""


@dataclass
class StageEstimate:
    stage: str
    rows: int
    seconds: float
    peak_mb: float
    notes: list[str] = field(default_factory=list)


@dataclass
class Plan:
    pipeline: Path
    params_path: Path
    device: str
    datasets: dict[str, int]
    stages: list[StageEstimate]
    notes: list[str] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    @property
    def peak_mb(self) -> float:
        return max((s.peak_mb for s in self.stages), default=0.0)


def load_throughputs(path: str | Path = DEFAULT_THROUGHPUTS) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise PlanError(f"{path} does not exist: run `python benchmarks/bench_scale.py --write` to measure throughputs")
    return json.loads(path.read_text())


def resolve_pipeline(target: str | Path) -> tuple[Path, Path]:
    """`pipelines/mptrj`, `pipelines/mptrj/dvc.yaml` or `.` → (dvc.yaml, its params.yaml)."""
    target = Path(target)
    dvc_yaml = target / "dvc.yaml" if target.is_dir() else target
    if not dvc_yaml.exists():
        raise PlanError(f"no pipeline at {target}: expected a directory with dvc.yaml or a dvc.yaml file")
    params = dvc_yaml.parent / "params.yaml"
    if not params.exists():
        raise PlanError(f"{dvc_yaml}: no params.yaml beside it")
    return dvc_yaml, params


def _stage_names(dvc_yaml: Path) -> list[str]:
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}
    if not stages:
        raise PlanError(f"{dvc_yaml}: no stages")
    return list(stages)


def dataset_rows(name: str, entry: dict[str, Any], params: dict[str, Any], known: dict[str, int], root: Path) -> tuple[int, str]:
    """Frames a dataset will have, and where that number comes from."""
    expected = (params.get("plan") or {}).get("expected_rows")
    if isinstance(expected, dict) and expected.get(name) is not None:
        return int(expected[name]), "plan.expected_rows"
    if isinstance(expected, int):
        return expected, "plan.expected_rows"
    for key in ("limit", "sample"):  # `sample`: the zero-shot sets' seeded sample
        if entry.get(key):
            return int(entry[key]), f"datasets.{name}.{key}"
    frames = root / "datasets" / name / "frames.parquet"
    if frames.exists():
        import pyarrow.parquet as pq

        return pq.ParquetFile(frames).metadata.num_rows, str(frames)
    for key in (name, str(entry.get("source")), str(entry.get("path"))):
        if key in known:
            return int(known[key]), f"known size of {key!r} (benchmarks/throughputs.json)"
    raise PlanError(f"dataset {name!r}: size unknown; set `plan.expected_rows` in the params (or `datasets.{name}.limit`)")


def _resolve_device(params: dict[str, Any], override: str | None) -> tuple[str, str | None]:
    wanted = override or str((params.get("evaluate") or {}).get("device", "cpu"))
    if wanted == "auto":
        try:
            import torch

            found = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            found = "cpu"
        return found, f"device auto → {found} on this machine (pass --device cuda to estimate a GPU run)"
    if wanted not in ("cpu", "cuda"):
        raise PlanError(f"device must be auto, cpu or cuda, got {wanted!r}")
    return wanted, None


def _stage_entry(stage: str, throughputs: dict[str, Any]) -> dict[str, Any]:
    stages = throughputs.get("stages") or {}
    if stage not in stages:
        raise PlanError(f"stage {stage!r} has no measured throughput in benchmarks/throughputs.json (known: {', '.join(sorted(stages))})")
    entry = dict(stages[stage])
    if "like" in entry:
        entry = {**stages[entry["like"]], **{k: v for k, v in entry.items() if k != "like"}}
    return entry


def _rate(entry: dict[str, Any], stage: str, model: str | None) -> tuple[float, float, str, int]:
    """(structures/s, peak MB, source, threads it was measured with) of a stage, or of one model."""
    if model is None:
        return float(entry["rate_per_s"]), float(entry.get("peak_mb", 0.0)), str(entry.get("source", "?")), int(entry.get("threads", 1))
    models = entry.get("models") or {}
    if model not in models:
        raise PlanError(f"stage {stage!r}: model {model!r} has no measured throughput in benchmarks/throughputs.json (known: {', '.join(sorted(models))})")
    m = models[model]
    return float(m["rate_per_s"]), float(m.get("peak_mb", entry.get("peak_mb", 0.0))), str(m.get("source", "?")), int(m.get("threads", 1))


def soap_size(params: dict[str, Any]) -> str:
    """`n_max x l_max` of the featurize SOAP: the featurize rate depends on it (by_soap entries)."""
    soap = (params.get("featurize") or {}).get("soap") or {}
    return f"{soap.get('n_max', 8)}x{soap.get('l_max', 6)}"


def _for_params(entry: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The entry's measurement for these params: its `by_soap` variant when one matches."""
    variant = (entry.get("by_soap") or {}).get(soap_size(params))
    return {**entry, **variant} if variant else entry


def _lookup(params: dict[str, Any], key: str) -> Any:
    value: Any = params
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _models_for(stage: str, entry: dict[str, Any], params: dict[str, Any]) -> list[str | None]:
    key = entry.get("models_param")  # e.g. "evaluate.models": one pass per listed model
    if not key:
        return [None]
    value = _lookup(params, key)
    return [value] if isinstance(value, str) else list(value or [])  # one model (zeroshot.trained.model) or a list


def _stage_datasets(stage: str, entry: dict[str, Any], params: dict[str, Any], sizes: dict[str, int]) -> list[str | None]:
    if entry.get("per_dataset") is False:  # one run over its own inputs (phonons, md, leaderboard): fixed_seconds once
        return [None]
    key = entry.get("datasets_param")  # e.g. "train.datasets"; default: every dataset
    if not key:
        return list(sizes)
    return [d for d in (_lookup(params, key) or []) if d in sizes]


def dask_workers(compute: dict[str, Any]) -> tuple[int, str | None]:
    """How many chunks run at once: 1 in-process; `n_workers` on Dask, at most this machine's
    cores when the cluster is a LocalCluster started here (no `scheduler_address`)."""
    if compute.get("executor") != "dask":
        return 1, None
    workers = int(compute.get("n_workers", 1))
    cores = os.cpu_count() or 1
    if not compute.get("scheduler_address") and workers > cores:
        return cores, f"compute.n_workers {workers} but a LocalCluster here has {cores} cores: parallel stages ÷{cores}"
    return workers, None


def estimate(
    target: str | Path,
    throughputs: dict[str, Any] | None = None,
    *,
    device: str | None = None,
    rows: int | None = None,
    root: str | Path = ".",
) -> Plan:
    """Estimate every stage of a pipeline. `rows` overrides the size of every dataset."""
    dvc_yaml, params_path = resolve_pipeline(target)
    params = yaml.safe_load(params_path.read_text()) or {}
    throughputs = throughputs if throughputs is not None else load_throughputs()
    assumptions = throughputs.get("assumptions") or {}
    datasets = params.get("datasets") or {}
    if not datasets:
        raise PlanError(f"{params_path}: no `datasets`")
    known = throughputs.get("known_sizes") or {}
    sizes: dict[str, int] = {}
    size_notes: list[str] = []
    for name, entry in datasets.items():
        if rows is not None:
            sizes[name] = int(rows)
            continue
        sizes[name], origin = dataset_rows(name, entry or {}, params, known, Path(root))
        size_notes.append(f"{name}: {sizes[name]:,} frames ({origin})")
    resolved, device_note = _resolve_device(params, device)
    keep = float((params.get("plan") or {}).get("dedup_keep_fraction", assumptions.get("dedup_keep_fraction", 1.0)))
    workers, workers_note = dask_workers(params.get("compute") or {})
    here = not (params.get("compute") or {}).get("scheduler_address")  # workers share this machine's cores
    gpu = assumptions.get("gpu_speedup") or {}

    estimates = []
    for stage in _stage_names(dvc_yaml):
        entry = _for_params(_stage_entry(stage, throughputs), params)
        est = StageEstimate(stage, 0, 0.0, 0.0)
        for dataset in _stage_datasets(stage, entry, params, sizes):
            n = 0 if dataset is None else sizes[dataset] if entry.get("input", "frames") == "frames" else round(sizes[dataset] * keep)
            passes = 1.0
            if entry.get("passes_param"):  # e.g. epochs
                passes = float(_lookup(params, entry["passes_param"]) or entry.get("passes_default", 1))
            if entry.get("count_param"):  # e.g. one model per train.folds entry
                passes *= max(1, len(_lookup(params, entry["count_param"]) or []))
            if entry.get("rows_cap_param"):  # e.g. train.max_train_frames
                cap = _lookup(params, entry["rows_cap_param"])
                if cap:
                    n = min(n, int(cap))
            est.rows += n
            for model in _models_for(stage, entry, params):
                rate, peak, source, threads = _rate(entry, stage, model)
                seconds = float(entry.get("fixed_seconds", 0.0)) + (passes * n / rate if n else 0.0)
                label = f"{model}: " if model else ""
                note = f"{label}{rate:g}/s ({source})"
                parallel = workers
                if here and threads > 1:  # the rate already used `threads` of this machine's cores
                    parallel = max(1, workers // threads)
                    note += f"; measured with {threads} threads"
                if entry.get("parallel") and parallel > 1:
                    seconds /= parallel
                    note += f"; ÷{parallel} Dask workers (assumed linear scaling)"
                if resolved == "cuda" and entry.get("gpu"):
                    factor = float(gpu.get(stage, gpu.get(entry.get("like", ""), gpu.get("default", 1.0))))
                    seconds /= factor
                    note += f"; ÷{factor:g} GPU speed-up (ASSUMPTION, not measured here)"
                memory = entry.get("memory")
                if isinstance(memory, dict):
                    peak = float(memory.get("base_mb", 0.0)) + n * float(memory.get("mb_per_row", 0.0))
                    note += f"; memory {memory.get('base_mb', 0)} MB + {memory.get('mb_per_row', 0)} MB/row"
                est.seconds += seconds
                est.peak_mb = max(est.peak_mb, peak)
                if note not in est.notes:
                    est.notes.append(note)
        estimates.append(est)
    notes = size_notes + [n for n in (device_note, workers_note) if n] + (
        [f"dedup keeps {keep:.0%} of frames (plan.dedup_keep_fraction or assumption)"] if keep != 1.0 else []
    )
    return Plan(dvc_yaml, params_path, resolved, sizes, estimates, notes)


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_plan(plan: Plan) -> str:
    lines = [f"plan for {plan.pipeline} (params {plan.params_path}, device {plan.device})"]
    lines += [f"  {note}" for note in plan.notes]
    lines.append("")
    lines.append(f"{'stage':<18}{'rows':>12}{'time':>12}{'peak memory':>14}  basis")
    for s in plan.stages:
        lines.append(f"{s.stage:<18}{s.rows:>12,}{format_duration(s.seconds):>12}{s.peak_mb / 1024:>11.1f} GB  {' | '.join(s.notes)}")
    lines.append(f"{'total':<18}{'':>12}{format_duration(plan.total_seconds):>12}{plan.peak_mb / 1024:>11.1f} GB  (peak of any stage)")
    return "\n".join(lines)
