"""`xtalbench diatomics <model>`: a model's dimer curves against DFT (PBE or r2SCAN).

The DFT curves (`{"PBE": {"A-B": {"distances", "energies", "forces", ...}}, "r2SCAN": ...}`,
Matbench Discovery) are rebuilt as frames: atom 0 at the centre of a `box` Å cubic cell, atom 1
at +r along x (the file's force convention: at short range atom 1 is pushed to +x). Predictions
go through `xtalbench.evaluate.stage.evaluate` (same batching and device rules as evaluate);
pairs with an element the model does not cover are skipped and counted. Writes
`datasets/diatomics/<model>.parquet` (predictions) and `metrics/diatomics/<model>.json`
(per pair `curves.curve_metrics`, their `summary`, throughput).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from xtalbench.core.errors import XtalbenchError
from xtalbench.core.io import StageOutputs
from xtalbench.core.params import parse_section
from xtalbench.core.project import write_json
from xtalbench.diatomics.curves import curve_metrics, summary
from xtalbench.diatomics.params import DiatomicsParams


class DiatomicsError(XtalbenchError, ValueError):
    """An unreadable curves file or pair; names the file and the record."""


def read_curves(path: str | Path, functional: str) -> dict[str, dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise DiatomicsError(f"{path}: no such file (params diatomics.path; is ../shared beside the project?)")
    try:
        with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise DiatomicsError(f"{path}: not readable JSON ({error})") from error
    if functional not in data:
        raise DiatomicsError(f"{path}: no {functional!r} curves (have: {', '.join(data)})")
    for pair, curve in data[functional].items():
        for key in ("distances", "energies"):
            if key not in curve:
                raise DiatomicsError(f"{path}: record {functional}/{pair}, field {key!r}: missing")
    return data[functional]


def choose_pairs(available: list[str], pairs: list[str] | None, max_pairs: int | None, seed: int) -> list[str]:
    if pairs is not None:
        missing = [p for p in pairs if p not in available]
        if missing:
            raise DiatomicsError(f"params diatomics.pairs: {', '.join(missing)} not in the curves file")
        return list(pairs)
    ordered = sorted(available)
    if max_pairs is None or max_pairs >= len(ordered):
        return ordered
    pick = np.random.default_rng(seed).choice(len(ordered), size=max_pairs, replace=False)
    return [ordered[i] for i in sorted(pick)]


def dimer_frames(curves: Mapping[str, Mapping[str, Any]], pairs: list[str], box: float) -> pa.Table:
    """One frames-table row per (pair, distance) with the columns evaluate needs."""
    from xtalbench.core.schema import atomic_number

    rows: dict[str, list] = {k: [] for k in ("frame_id", "material_id", "nsites", "numbers", "positions", "lattice", "pbc")}
    centre = box / 2
    for pair in pairs:
        a, b = pair.split("-")
        numbers = [atomic_number(a, pair), atomic_number(b, pair)]
        for i, r in enumerate(curves[pair]["distances"]):
            rows["frame_id"].append(f"{pair}-{i:03d}")
            rows["material_id"].append(pair)
            rows["nsites"].append(2)
            rows["numbers"].append(numbers)
            rows["positions"].append([centre, centre, centre, centre + float(r), centre, centre])
            rows["lattice"].append([box, 0.0, 0.0, 0.0, box, 0.0, 0.0, 0.0, box])
            rows["pbc"].append([False, False, False])
    return pa.table(rows, schema=pa.schema([("frame_id", pa.string()), ("material_id", pa.string()), ("nsites", pa.int32()),
                                            ("numbers", pa.list_(pa.int32())), ("positions", pa.list_(pa.float64())),
                                            ("lattice", pa.list_(pa.float64())), ("pbc", pa.list_(pa.bool_()))]))  # fmt: skip


def failing_pairs(frames: pa.Table, spec: Any, device: str, predictor: Any = None) -> dict[str, str]:
    """pair → the model's error, for the pairs it cannot predict (one pair at a time)."""
    from xtalbench.evaluate.stage import cached_predictor

    model = predictor or cached_predictor(spec, spec.checkpoint, device, spec.defaults.get("dtype") or "float64")
    failed = {}
    for pair in dict.fromkeys(frames["material_id"].to_pylist()):
        rows = frames.filter(pc.equal(frames["material_id"], pair)).to_pylist()
        if model.supported_numbers is not None and not {int(z) for z in rows[0]["numbers"]} <= model.supported_numbers:
            continue  # evaluate skips these itself
        try:
            model.predict(rows)
        except Exception as error:
            failed[pair] = f"{type(error).__name__}: {error}"[:300]
    return failed


def diatomics(model: str, params: Mapping[str, Any], models_dir: str = "models", root: Path = Path("."), progress: bool = True,
              predictor: Any = None) -> dict[str, Any]:  # fmt: skip
    from xtalbench.core.device import resolve_device
    from xtalbench.evaluate.stage import evaluate
    from xtalbench.models import load_spec

    cfg = parse_section(DiatomicsParams, params, "diatomics")
    curves = read_curves(cfg.path, cfg.functional)
    pairs = choose_pairs(list(curves), cfg.pairs, cfg.max_pairs, cfg.seed)
    spec = load_spec(model, models_dir)
    frames = dimer_frames(curves, pairs, cfg.box)
    out_final = root / "datasets" / "diatomics" / f"{spec.name}.parquet"
    device = resolve_device(cfg.device)
    # predictions, skipped rows and metrics appear together (metrics last) or not at all
    with StageOutputs(f"diatomics {spec.name}") as staged:
        out = staged.path(out_final)
        skipped_out = staged.path(out_final.with_name(f"{spec.name}.skipped.parquet"))
        metrics_out = staged.path(root / "metrics" / "diatomics" / f"{spec.name}.json")

        def run(table: pa.Table):
            return evaluate("diatomics", spec, table, out, skipped_out, device=device,
                            batch_size=cfg.batch_size, threads=cfg.threads, progress=progress, predictor=predictor)  # fmt: skip

        failed: dict[str, str] = {}
        try:
            result = run(frames)
        except Exception as error:  # a pair the model cannot take (e.g. CHGNet: an isolated atom beyond its cutoff) fails the chunk
            failed = failing_pairs(frames, spec, device, predictor)
            if not failed:
                raise
            print(f"diatomics {spec.name}: {len(failed)} pair(s) the model cannot predict, left out ({error})", flush=True)
            result = run(frames.filter(pc.invert(pc.is_in(frames["material_id"], value_set=pa.array(sorted(failed))))))
        pred = pq.read_table(out, columns=["frame_id", "material_id", "energy", "forces"]).to_pylist()
        by_pair: dict[str, list[dict]] = {}
        for row in pred:
            by_pair.setdefault(row["material_id"], []).append(row)
        per_pair = {}
        for pair in pairs:
            rows = sorted(by_pair.get(pair, []), key=lambda r: r["frame_id"])
            if len(rows) != len(curves[pair]["distances"]):
                continue  # skipped (unsupported element): counted below
            f_bond = [0.5 * (r["forces"][3] - r["forces"][0]) if r["forces"] else np.nan for r in rows]
            per_pair[pair] = curve_metrics(curves[pair]["distances"], [r["energy"] for r in rows], curves[pair]["energies"],
                                           None if any(np.isnan(f_bond)) else f_bond, cfg.max_energy, cfg.minima_tolerance, pair)  # fmt: skip
        metrics = {
            "model": spec.name,
            "reference": {"path": cfg.path, "functional": cfg.functional, "source": "Matbench Discovery diatomics (MIT)"},
            "summary": summary(per_pair),
            "pairs": per_pair,
            "skipped_pairs": [p for p in pairs if p not in per_pair],
            "model_failures": failed,
            "throughput": result.throughput,
            "notes": ["energies relative to each curve's value at its largest distance (6 Å): the model's atomic references drop out",
                      f"{len(pairs)} of {len(curves)} pairs (params diatomics.pairs / max_pairs, seed {cfg.seed})"],  # fmt: skip
        }
        write_json(metrics, metrics_out)
    return metrics
