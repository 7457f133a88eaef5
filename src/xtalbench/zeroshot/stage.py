"""`xtalbench zeroshot <dataset> <model>`: predict every frame of a zero-shot set, score it like with like.

Reads `datasets/<d>/frames.parquet` (the seeded sample fetch wrote; the full set with
`sample: null`) — not dedup.parquet: the published figures beside ours are on whole sets.
Predictions go through `xtalbench.evaluate.stage.evaluate` (same batching, chunking, Dask and
device rules as `xtalbench evaluate`). Writes:

- `datasets/zeroshot/<d>/<model>.parquet` (+ `.skipped.parquet`): predictions;
- `datasets/zeroshot/<d>/<model>.errors.parquet`: per-frame error sums (`scores.ERROR_COLUMNS`),
  `hubbard` (a +U chemistry), the MP2020 correction removed (eV), for the leaderboard's ratios;
- `metrics/zeroshot/scores/<d>/<model>.json`: scores with CIs (headline + GGA / +U subsets), the
  conventions and notes, contamination, throughput and hardware.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from xtalbench.core.errors import MissingInputError
from xtalbench.core.io import StageOutputs, expect_rows
from xtalbench.core.params import parse_section
from xtalbench.core.project import Paths, write_json
from xtalbench.zeroshot.conventions import (
    hubbard_frame,
    model_level_of_theory,
    parse_level_of_theory,
    plan,
)
from xtalbench.zeroshot.params import ZeroshotParams
from xtalbench.zeroshot.paths import output_paths
from xtalbench.zeroshot.scores import (
    ERROR_COLUMNS,
    ScoreError,
    frame_error_sums,
    summarize,
)

FRAME_COLUMNS = ["frame_id", "material_id", "nsites", "numbers", "lattice", "positions", "pbc", "energy", "forces", "stress", "meta"]


def set_source(frames: pd.DataFrame) -> str | None:
    """The frames' database (`source` in their meta: MPtrj, Alexandria, Internal)."""
    for meta in frames["meta"]:
        if meta:
            return json.loads(meta).get("source")
    return None


def frame_errors(frames: pd.DataFrame, predictions: pd.DataFrame, remove_mp2020: bool, score_energy: bool, references: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per predicted frame: error sums, `hubbard`, and the MP2020 correction taken off (eV)."""
    from xtalbench.core.schema import to_structure
    from xtalbench.evaluate.thermo import MP2020FormationEnergy, ThermoError

    truth = frames.set_index("frame_id")
    thermo = MP2020FormationEnergy(references=references) if remove_mp2020 else None
    failures: dict[str, str] = {}
    rows = []
    for p in predictions.itertuples(index=False):
        if p.frame_id not in truth.index:
            raise ScoreError(f"predictions: record {p.frame_id!r}, field 'frame_id': not in the frames table")
        t = truth.loc[p.frame_id]
        n = int(t["nsites"])
        e_pred = None if p.energy is None or not score_energy else float(p.energy)
        correction = 0.0
        if thermo is not None and e_pred is not None:
            try:
                correction = thermo.correction(to_structure({**t.to_dict(), "frame_id": p.frame_id}), p.frame_id)
            except ThermoError as error:
                failures[p.frame_id] = error.reason
                e_pred = None
            else:
                e_pred -= correction
        sums = frame_error_sums(p.frame_id, n, e_pred, t["energy"], p.forces, t["forces"], p.stress, t["stress"])
        signed = (e_pred - t["energy"]) / n if e_pred is not None and t["energy"] is not None else float("nan")
        rows.append({"frame_id": p.frame_id, "material_id": t["material_id"], "nsites": n, "hubbard": hubbard_frame(list(t["numbers"])),
                     "mp2020_correction_eV": correction, "e_signed": signed, **sums})  # fmt: skip
    columns = ["frame_id", "material_id", "nsites", "hubbard", "mp2020_correction_eV", "e_signed", *ERROR_COLUMNS]
    # typed even when empty (a model that covers none of the set's elements): `~hubbard` must stay a row mask
    return pd.DataFrame(rows, columns=columns).astype({"hubbard": bool, "nsites": "int64", "e_signed": float, **dict.fromkeys(ERROR_COLUMNS, float)}), failures


def score(errors: pd.DataFrame, separate_hubbard: bool, cfg: ZeroshotParams) -> dict[str, Any]:
    """Headline scores (GGA frames when +U chemistries are scored apart) and both subsets."""
    gga, hub = errors[~errors["hubbard"]], errors[errors["hubbard"]]
    out: dict[str, Any] = {"headline_subset": "gga" if separate_hubbard else "all"}
    gga_scores = summarize(gga, cfg.n_bootstrap, cfg.seed, cfg.ci)
    out["scores"] = gga_scores if separate_hubbard else summarize(errors, cfg.n_bootstrap, cfg.seed, cfg.ci)
    out["subsets"] = {"gga": gga_scores}
    if not (separate_hubbard and cfg.hubbard_policy == "refuse"):
        out["subsets"]["hubbard_u"] = summarize(hub, cfg.n_bootstrap, cfg.seed, cfg.ci)
    return out


def failing_frames(frames_path: Path, spec: Any, device: str, predictor: Any = None) -> dict[str, str]:
    """frame_id → the model's error, for the frames it cannot predict one at a time (empty: none fails)."""
    from xtalbench.evaluate.stage import INPUT_COLUMNS, cached_predictor

    model = predictor or cached_predictor(spec, spec.checkpoint, device, spec.defaults.get("dtype") or "float64")
    failed = {}
    for row in pq.read_table(frames_path, columns=INPUT_COLUMNS).to_pylist():
        if model.supported_numbers is not None and not {int(z) for z in row["numbers"]} <= model.supported_numbers:
            continue  # evaluate skips these itself, with the reason
        try:
            model.predict([row], batch_size=1)
        except Exception as error:
            failed[row["frame_id"]] = f"{type(error).__name__}: {error}"[:300]
    return failed


def _offsets(errors: pd.DataFrame, frames: pd.DataFrame, separate_hubbard: bool) -> dict[str, Any]:
    """`diagnose.elemental_offsets` on the headline frames."""
    from xtalbench.zeroshot.diagnose import elemental_offsets

    subset = errors[~errors["hubbard"]] if separate_hubbard else errors
    numbers = frames.set_index("frame_id").loc[subset["frame_id"], "numbers"]
    return elemental_offsets(subset["e_signed"].to_numpy(), [list(z) for z in numbers])


def zeroshot(dataset: str, model: str, params: Mapping[str, Any], models_dir: str = "models", root: Path = Path("."),
             progress: bool = True, predictor: Any = None) -> dict[str, Any]:  # fmt: skip
    """Predict, score and write one model × dataset (see the module docstring)."""
    from xtalbench.core.device import resolve_device
    from xtalbench.core.parallel import compute_options
    from xtalbench.evaluate.contamination import training_set_info
    from xtalbench.evaluate.stage import evaluate
    from xtalbench.fetch.params import dataset_entry
    from xtalbench.models import load_spec
    from xtalbench.zeroshot.contamination import contamination

    cfg = parse_section(ZeroshotParams, params, "zeroshot")
    entry = dataset_entry(params, dataset)
    data_lot = parse_level_of_theory(getattr(entry, "level_of_theory", None), dataset)
    spec = load_spec(model, models_dir).resolve(dataset)
    model_lot = model_level_of_theory(spec)
    decided = plan(model_lot, data_lot, spec.name, dataset)
    paths = output_paths(dataset, spec.name, root)
    frames_path = Paths(dataset, root).frames
    if not frames_path.exists():
        raise MissingInputError(f"{frames_path} does not exist: run `xtalbench fetch {dataset}` first (dvc repro)")
    expect_rows(frames_path, Paths(dataset, root).metrics("fetch"), "kept")  # frames of another or an interrupted fetch: refused
    # predictions, skipped rows, errors and metrics appear together (metrics last) or not at all
    with StageOutputs(f"zeroshot {dataset} {spec.name}") as out:
        staged = {key: out.path(paths[key]) for key in ("predictions", "skipped", "errors", "metrics")}
        run = partial(evaluate, dataset, spec, output=staged["predictions"], skipped_output=staged["skipped"], device=resolve_device(cfg.device),
                      batch_size=cfg.batch_size, threads=cfg.threads, compute=compute_options(dict(params)), progress=progress,
                      predictor=predictor)  # fmt: skip
        model_failures: dict[str, str] = {}
        try:
            result = run(frames=frames_path)
        except Exception as error:  # one frame the model cannot take (CHGNet: isolated atoms) fails its whole chunk
            model_failures = failing_frames(frames_path, spec, resolve_device(cfg.device), predictor)
            if not model_failures:
                raise
            print(f"zeroshot {dataset} {spec.name}: {len(model_failures)} frame(s) the model cannot predict, left out ({error})", flush=True)
            table = pq.read_table(frames_path)
            keep = pc.invert(pc.is_in(table["frame_id"], value_set=pa.array(sorted(model_failures))))
            result = run(frames=table.filter(keep))
        frames = pq.read_table(frames_path, columns=FRAME_COLUMNS).to_pandas()
        predictions = pq.read_table(staged["predictions"], columns=["frame_id", "energy", "forces", "stress"]).to_pandas()
        predictions = predictions.astype(object).where(predictions.notna(), None)
        errors, failures = frame_errors(frames, predictions, decided.remove_mp2020, decided.score_energy, cfg.mp_references)
        pq.write_table(pa.Table.from_pandas(errors, preserve_index=False), staged["errors"])
        notes = list(decided.notes)
        if failures:
            notes.append(f"{len(failures)} frames without an MP2020 correction (energy not scored), e.g. {next(iter(failures.items()))}")
        if model_failures:
            first = next(iter(model_failures.items()))
            notes.append(f"{len(model_failures)} frames the model fails on are left out (not scored), e.g. {first[0]}: {first[1]}")
        skipped = result.throughput.get("rows_skipped", 0)
        if skipped:
            notes.append(f"{skipped} frames not predicted (elements outside the model): see {paths['skipped']}")
        source = set_source(frames)
        metrics = {
            "model": spec.name,
            "model_status": {"status": spec.status, "known_issues": spec.known_issues} if spec.status != "ok" else {"status": "ok"},
            "dataset": dataset,
            "set": source,
            "training_set": training_set_info(spec),
            "level_of_theory": {"dataset": vars(data_lot), "model": vars(model_lot)},
            "conventions": {"mp2020_removed_from_predictions": decided.remove_mp2020, "energy_scored": decided.score_energy,
                            "hubbard_separate": decided.separate_hubbard},  # fmt: skip
            **score(errors, decided.separate_hubbard, cfg),
            "diagnostics": {"energy_offsets": _offsets(errors, frames, decided.separate_hubbard)},
            "contamination": contamination(spec, sorted(set(frames["material_id"])), source),
            "throughput": result.throughput,
            "frames": {"in": int(len(frames)), "predicted": int(len(predictions)), "skipped": int(skipped), "model_failures": model_failures},
            "notes": notes,
        }
        write_json(metrics, staged["metrics"])
    return metrics
