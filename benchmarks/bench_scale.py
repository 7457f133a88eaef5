"""Scale benchmark: time and peak memory of each stage on a generated MPtrj-shaped frames table.

    .venv/bin/python benchmarks/bench_scale.py            # every stage on 1,000,000 frames (~1.5 h here)
    .venv/bin/python benchmarks/bench_scale.py --rows 20000 --dedup-level composition   # quick

Generates `--rows` frames in the MPtrj shape (FRAMES_SCHEMA; 1-40 atoms of 62 elements, ~11
frames per material, forces, stress, magmoms; values derived from `--seed`), written row group by
row group, never all in memory. Then runs each stage in its own subprocess, on all `--rows` frames
unless a `--<stage>-rows` says fewer, with the dedup, featurize and split settings of `--params`
(default: the MPtrj pipeline's), and reports wall time, rows/s, peak RSS (the child's own
`ru_maxrss`, plus any children it waited for) and the size of what it wrote:

- generate   writing the table itself (bounded: one row group at a time)
- fetch      the real fetch stage (`mptrj` source: ijson stream-parse + validation + Parquet sink)
             over an MPtrj-format JSON of the first `--fetch-rows` frames
- dedup      the real stage, `dedup.dedup_file` (streamed: frames.parquet → dedup.parquet + clusters)
             at `--dedup-level` (default: the params' level; for the MPtrj params, ElMD + XRD
             + trajectory thinning take ~22 min on 1M frames here, `composition` alone 35 s)
- dedup-table  the same selection on the whole table read into memory (`pq.read_table` +
             `run_dedup`): the in-run baseline showing what streaming saves (add it to --stages)
- featurize  the real `featurize.featurize_file` (SOAP + composition), streamed through
             `parallel.map_row_groups` in-process (one process, so its peak RSS is the stage's)
- split      the real `splits.stage.run_split` (kernel-PCA map fitted on one frame per material,
             LOCO + random, split card, map plot) on featurize's output
- evaluate   the real stage, `evaluate.evaluate` (select → map_row_groups → collect), with the `emt`
             model (models/emt.yaml: ASE EMT, a cheap real model) on each size of `--evaluate-rows`
             (so the table shows whether peak RSS stays flat as the input grows; the smaller size
             must predict at least one full `compute.chunk_rows` chunk). EMT knows 11 elements, so
             each row group is `--evaluate-supported` (default 0.1) EMT-only frames and the rest
             broad-pool frames, which the stage writes to the skipped file (every frame is read,
             checked and written; ~10% pay for inference). `--evaluate-executor dask` runs the
             map on a LocalCluster.
- score      the scoring step of evaluate, `scoring.score_model` (predictions + dedup.parquet +
             split files → metrics JSON and parity plots), on each size of `--score-rows`: the
             generated frames are the labels, fake predictions are labels + seeded noise, with a
             random and a LOCO-like split (1 fold each). `--score-baseline-src DIR` also runs a
             copy of an older `xtalbench` package (DIR on PYTHONPATH) as the in-run baseline.
- baseline   a child that only imports the stack: the memory floor every stage pays

The table shows each stage's peak RSS, the same minus the baseline, and the ratio of the peak to
the size of the table it read held in memory (Arrow, uncompressed): well below 1 means the stage
streamed. Results go to `<workdir>/results.json`; `--write` stores rates and peaks in
benchmarks/throughputs.json (`xtalbench plan` reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PARAMS = "pipelines/mptrj/params.yaml"  # dedup, featurize and split settings of the MPtrj benchmark
THROUGHPUTS = ROOT / "benchmarks" / "throughputs.json"
# Elements the EMT stand-in model knows, and a broader pool for the rest (MPtrj has 89).
EMT_ELEMENTS = [1, 6, 7, 8, 13, 28, 29, 46, 47, 78, 79]
POOL = [3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35,
        37, 38, 39, 40, 41, 42, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 55, 56, 57, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83]


# --- the synthetic MPtrj-shaped table ------------------------------------------------------------


def _formula(numbers: np.ndarray) -> tuple[str, list[str]]:
    from math import gcd

    from ase.data import chemical_symbols

    zs, counts = np.unique(numbers, return_counts=True)
    g = 0
    for c in counts:
        g = gcd(g, int(c))
    symbols = [chemical_symbols[z] for z in zs]
    return "".join(f"{s}{'' if c // g == 1 else c // g}" for s, c in sorted(zip(symbols, counts))), sorted(symbols)


def synthetic_chunk(start: int, n_rows: int, seed: int, emt_only: bool = False) -> pa.Table:
    """Frames `start .. start+n_rows` of the synthetic set: deterministic in (seed, start)."""
    from xtalbench.core.schema import FRAMES_SCHEMA

    rng = np.random.default_rng([seed, start])
    pool = np.array(EMT_ELEMENTS if emt_only else POOL)
    cols: dict[str, list] = {name: [] for name in FRAMES_SCHEMA.names}
    flat = {"lattice": [], "numbers": [], "positions": [], "forces": [], "magmoms": []}
    offsets = {"lattice": [0], "numbers": [0], "positions": [0], "forces": [0], "magmoms": [0]}
    produced, material = 0, start
    while produced < n_rows:
        nsites = int(rng.integers(1, 41))
        n_species = int(rng.integers(1, min(4, nsites) + 1))
        species = rng.choice(pool, size=n_species, replace=False)
        numbers = np.sort(rng.choice(species, size=nsites)).astype(np.int32)
        numbers[:n_species] = np.sort(species)  # every chosen species present
        formula, elements = _formula(numbers)
        a = (nsites * rng.uniform(12.0, 22.0)) ** (1 / 3)
        cell = np.diag([a, a, a]) + rng.normal(0, 0.05 * a, (3, 3))
        frac = (np.arange(nsites)[:, None] * np.array([0.618034, 0.414214, 0.732051]) + rng.uniform(0, 0.02, (nsites, 3))) % 1.0
        n_frames = min(int(rng.integers(1, 22)), n_rows - produced)  # ~11 frames per material, as in MPtrj
        mid = f"mp-{material}"
        for k in range(n_frames):
            pos = (frac + rng.normal(0, 0.003, frac.shape)) @ cell
            cols["frame_id"].append(f"{mid}-0-{k}")
            cols["material_id"].append(mid)
            cols["formula"].append(formula)
            cols["elements"].append(elements)
            cols["nsites"].append(nsites)
            cols["energy"].append(float(-4.0 * nsites + rng.normal(0, 0.1) - 0.01 * (n_frames - k)))
            cols["stress"].append(rng.normal(0, 0.01, 6).tolist())
            cols["trajectory_id"].append(f"{mid}-0")
            cols["frame_index"].append(k)
            cols["structure_hash"].append(rng.bytes(16).hex())
            for key, values in (("lattice", cell.ravel()), ("numbers", numbers), ("positions", pos.ravel()),
                                ("forces", rng.normal(0, 0.3, 3 * nsites)), ("magmoms", rng.normal(0, 0.5, nsites))):
                flat[key].append(values)
                offsets[key].append(offsets[key][-1] + len(values))
        produced += n_frames
        material += 1
    n = produced
    arrays = {}
    for key in flat:
        values = np.concatenate(flat[key])
        value_type = pa.int32() if key == "numbers" else pa.float64()
        arrays[key] = pa.ListArray.from_arrays(pa.array(offsets[key], pa.int32()), pa.array(values, value_type))
    arrays.update(
        {
            "frame_id": pa.array(cols["frame_id"]),
            "material_id": pa.array(cols["material_id"]),
            "source": pa.array(["mptrj"] * n),
            "formula": pa.array(cols["formula"]),
            "elements": pa.array(cols["elements"], pa.list_(pa.string())),
            "nsites": pa.array(cols["nsites"], pa.int32()),
            "pbc": pa.array([[True, True, True]] * n, pa.list_(pa.bool_())),
            "energy": pa.array(cols["energy"]),
            "stress": pa.array(cols["stress"], pa.list_(pa.float64())),
            "formation_energy_per_atom": pa.nulls(n, pa.float64()),
            "e_above_hull": pa.nulls(n, pa.float64()),
            "band_gap": pa.array(rng.uniform(0, 3, n)),
            "spacegroup": pa.nulls(n, pa.int32()),
            "trajectory_id": pa.array(cols["trajectory_id"]),
            "frame_index": pa.array(cols["frame_index"], pa.int32()),
            "structure_hash": pa.array(cols["structure_hash"]),
            "meta": pa.nulls(n, pa.string()),
        }
    )
    return pa.table([arrays[name] for name in FRAMES_SCHEMA.names], schema=FRAMES_SCHEMA)


def generate(path: Path, rows: int, seed: int, row_group: int = 10_000, emt_only: bool = False, progress: bool = True) -> int:
    """Write `rows` synthetic frames to `path`, one row group at a time."""
    from tqdm.auto import tqdm

    from xtalbench.core.parallel import RowGroupWriter
    from xtalbench.core.schema import FRAMES_SCHEMA

    with RowGroupWriter(path, FRAMES_SCHEMA, row_group) as writer, tqdm(total=rows, unit="frames", desc="generate", disable=not progress) as bar:
        for start in range(0, rows, row_group):
            chunk = synthetic_chunk(start, min(row_group, rows - start), seed, emt_only)
            writer.write(chunk)
            bar.update(chunk.num_rows)
    return rows


def head(source: Path, target: Path, rows: int) -> Path:
    """The first `rows` frames of `source`, streamed."""
    from xtalbench.core.parallel import RowGroupWriter, iter_chunks

    done = 0
    schema = pq.ParquetFile(source).schema_arrow
    with RowGroupWriter(target, schema) as writer:
        for chunk in iter_chunks(source, 10_000):
            take = min(chunk.num_rows, rows - done)
            writer.write(chunk.slice(0, take))
            done += take
            if done >= rows:
                break
    return target


def write_mptrj_json(source: Path, target: Path, rows: int) -> Path:
    """An MPtrj-format JSON ({mp-id: {frame-id: {structure, energies, force, stress (kBar), ...}}})
    of the first `rows` frames, written material by material."""
    from ase.data import chemical_symbols
    from ase.units import GPa

    from xtalbench.core.parallel import iter_chunks

    done, current, first_material = 0, None, True
    with open(target, "w") as out:
        out.write("{")
        for chunk in iter_chunks(source, 5_000):
            for row in chunk.to_pylist():
                if done >= rows:
                    break
                if row["material_id"] != current:
                    out.write("" if current is None else "},")
                    out.write(json.dumps(row["material_id"]) + ": {")
                    current, first_material = row["material_id"], True
                n = row["nsites"]
                lattice = np.asarray(row["lattice"]).reshape(3, 3)
                inv = np.linalg.inv(lattice)
                sites = [{"species": [{"element": chemical_symbols[z], "occu": 1}], "abc": (np.asarray(p) @ inv).tolist(), "xyz": list(p), "label": chemical_symbols[z], "properties": {}}
                         for z, p in zip(row["numbers"], np.asarray(row["positions"]).reshape(n, 3).tolist())]
                s = row["stress"]
                stress_kbar = (-10.0 / GPa) * np.array([[s[0], s[5], s[4]], [s[5], s[1], s[3]], [s[4], s[3], s[2]]])
                record = {
                    "structure": {"@module": "pymatgen.core.structure", "@class": "Structure", "charge": 0,
                                  "lattice": {"matrix": lattice.tolist(), "pbc": [True, True, True]}, "properties": {}, "sites": sites},
                    "uncorrected_total_energy": row["energy"], "corrected_total_energy": row["energy"],
                    "energy_per_atom": row["energy"] / n, "ef_per_atom": None, "e_per_atom_relaxed": None, "ef_per_atom_relaxed": None,
                    "force": np.asarray(row["forces"]).reshape(n, 3).tolist(), "stress": stress_kbar.tolist(),
                    "magmom": row["magmoms"], "bandgap": row["band_gap"], "mp_id": row["material_id"],
                }
                out.write(("" if first_material else ",") + json.dumps(row["frame_id"]) + ": " + json.dumps(record))
                first_material = False
                done += 1
            if done >= rows:
                break
        out.write("}}" if current is not None else "}")
    return target


def generate_evaluate_input(path: Path, rows: int, seed: int, supported: float, row_group: int = 10_000) -> Path:
    """`rows` frames for the evaluate stage: in each row group, a `supported` share of EMT-only
    frames (predicted), then broad-pool frames (mostly skipped: elements EMT does not know)."""
    from xtalbench.core.parallel import RowGroupWriter
    from xtalbench.core.schema import FRAMES_SCHEMA

    with RowGroupWriter(path, FRAMES_SCHEMA, row_group) as writer:
        for start in range(0, rows, row_group):
            n = min(row_group, rows - start)
            k = round(n * supported)
            if k:
                writer.write(synthetic_chunk(start, k, seed, emt_only=True))
            if n - k:  # material ids start after the EMT part's: no id collides
                writer.write(synthetic_chunk(start + k, n - k, seed, emt_only=False))
    return path


# --- stages, each run in a child process ---------------------------------------------------------


def run_stage(stage: str, input_path: Path, workdir: Path) -> dict:
    """Run one stage in this process; returns what it processed."""
    import yaml

    params = yaml.safe_load((ROOT / os.environ.get("XTALBENCH_BENCH_PARAMS", DEFAULT_PARAMS)).read_text())
    if stage == "baseline":
        import xtalbench.core.parallel  # noqa: F401
        import xtalbench.dedup.stage  # noqa: F401
        import xtalbench.featurize.stage  # noqa: F401

        return {"rows": 0}
    if stage == "generate":
        return {"rows": pq.ParquetFile(input_path).metadata.num_rows}  # generated by the parent's child call below
    if stage == "fetch":
        from xtalbench.core.project import Paths
        from xtalbench.fetch.stage import fetch

        config = {"source": "mptrj", "path": str(input_path), "progress": False}
        summary = fetch("bench", config, Paths("bench", root=workdir))
        return {"rows": int(summary["read"]), "kept": int(summary["kept"]), "output_mb": Paths("bench", root=workdir).frames.stat().st_size / 2**20}
    if stage == "score":
        return run_score(input_path, params)
    table_rows = pq.ParquetFile(input_path).metadata.num_rows
    if stage in ("dedup", "dedup-table"):
        from xtalbench.dedup.stage import dataset_config, dedup_file, run_dedup

        cfg = dataset_config(params["dedup"], "bench")
        if os.environ.get("XTALBENCH_BENCH_DEDUP_LEVEL"):
            cfg["level"] = os.environ["XTALBENCH_BENCH_DEDUP_LEVEL"]
        if stage == "dedup":
            metrics = dedup_file(input_path, workdir / "dedup.parquet", workdir / "dedup_clusters.parquet", cfg)
        else:
            _, _, metrics = run_dedup(pq.read_table(input_path), cfg)
        out_mb = (workdir / "dedup.parquet").stat().st_size / 2**20 if stage == "dedup" else 0.0
        return {"rows": table_rows, "kept": metrics["kept"]["frames"], "materials": metrics["read"]["materials"], "level": cfg["level"], "output_mb": out_mb}
    if stage == "featurize":
        from xtalbench.core.project import Paths
        from xtalbench.featurize.stage import featurize_file

        target = Paths("bench", root=workdir).features
        target.parent.mkdir(parents=True, exist_ok=True)
        summary = featurize_file(input_path, target, params["featurize"], quarantine=workdir / "fq.parquet",
                                 compute={"executor": "local"}, progress=False)
        return {"rows": int(summary["rows_read"]), "n_features": summary["soap"]["n_features"], "output_mb": target.stat().st_size / 2**20}
    if stage == "split":
        from xtalbench.core.project import Paths
        from xtalbench.split.stage import run_split

        paths = Paths("bench", root=workdir)
        if not paths.features.exists():
            raise SystemExit("split reads the featurize stage's output: run featurize first (--stages ...,featurize,split)")
        metrics = run_split("bench", paths, params, input_path)
        loco = metrics["strategies"].get("loco", {})
        return {"rows": int(metrics["input"]["featurized"]), "strategies": sorted(metrics["strategies"]),
                "loco_clusters": loco.get("cluster_sizes"), "output_mb": sum(f.stat().st_size for f in paths.splits_dir.glob("*.parquet")) / 2**20}
    if stage == "evaluate":
        from xtalbench.core.parallel import compute_options
        from xtalbench.evaluate.stage import evaluate
        from xtalbench.models import load_spec

        compute = compute_options({"compute": {**(params.get("compute") or {}), "executor": os.environ.get("XTALBENCH_BENCH_EVALUATE_EXECUTOR", "local")}})
        out = workdir / "predictions" / "emt.parquet"
        result = evaluate("bench", load_spec(ROOT / "models" / "emt.yaml"), input_path, out, device="cpu", compute=compute, progress=False)
        t = result.throughput
        return {"rows": t["rows_in"], "predicted": t["rows_predicted"], "skipped": t["rows_skipped"], "executor": t["executor"],
                "structures_per_s": t["structures_per_s"], "atoms_per_s": t["atoms_per_s"], "output_mb": out.stat().st_size / 2**20}
    raise SystemExit(f"unknown stage {stage!r}")


# --- the score stage: fake predictions and splits over generated labels ------------------------------

SCORE_SPEC = {"name": "fake", "kind": "mace-file", "energy_kind": "total",
              "training_set": {"name": "bench", "database": "synthetic", "version": "0", "ids_file": None}}


def write_score_inputs(frames: Path, root: Path, rows: int, seed: int) -> Path:
    """`root` laid out as a repository for dataset `bench`: the first `rows` frames as dedup.parquet,
    predictions = labels + seeded noise, and random/loco split files; all streamed by row group."""
    import zlib

    from xtalbench.core.parallel import RowGroupWriter, iter_chunks
    from xtalbench.evaluate.stage import PREDICTIONS_SCHEMA

    data = root / "datasets" / "bench"
    data.mkdir(parents=True, exist_ok=True)
    if rows:
        dedup = head(frames, data / "dedup.parquet", rows)
    else:  # the whole generated table
        dedup = data / "dedup.parquet"
        dedup.unlink(missing_ok=True)
        dedup.symlink_to(frames.resolve())
    split_schema = pa.schema([("frame_id", pa.string()), ("material_id", pa.string()), ("fold", pa.int32()), ("role", pa.string()), ("cluster", pa.int32())])
    (root / "splits" / "bench").mkdir(parents=True, exist_ok=True)
    with (
        RowGroupWriter(data / "predictions" / "fake.parquet", PREDICTIONS_SCHEMA) as preds,
        RowGroupWriter(root / "splits" / "bench" / "random.parquet", split_schema) as rnd,
        RowGroupWriter(root / "splits" / "bench" / "loco.parquet", split_schema) as loco,
    ):
        for k, chunk in enumerate(iter_chunks(dedup, 10_000)):
            rng = np.random.default_rng([seed, 7, k])
            n = chunk.num_rows
            forces, stress = chunk.column("forces").combine_chunks(), chunk.column("stress").combine_chunks()
            noisy = lambda lists, scale: pa.ListArray.from_arrays(lists.offsets, pa.array(lists.values.to_numpy() + rng.normal(0, scale, len(lists.values))))  # noqa: E731
            energy = chunk.column("energy").to_numpy() + rng.normal(0, 0.05, n) * chunk.column("nsites").to_numpy()
            preds.write(pa.table({"frame_id": chunk.column("frame_id"), "material_id": chunk.column("material_id"), "nsites": chunk.column("nsites"),
                                  "energy": energy, "forces": noisy(forces, 0.05), "stress": noisy(stress, 0.001),
                                  "strategy": pa.nulls(n, pa.string()), "fold": pa.nulls(n, pa.int32())}, schema=PREDICTIONS_SCHEMA))
            h = np.array([zlib.crc32(m.encode()) for m in chunk.column("material_id").to_pylist()])
            roles = np.where(h % 10 < 2, "test", np.where(h % 10 == 2, "val", "train"))
            cluster = (h // 10) % 5
            base = {"frame_id": chunk.column("frame_id"), "material_id": chunk.column("material_id"), "fold": pa.array(np.zeros(n, np.int32))}
            rnd.write(pa.table({**base, "role": pa.array(roles), "cluster": pa.nulls(n, pa.int32())}, schema=split_schema))
            loco_roles = np.where(cluster == 0, "test", np.where(cluster == 1, "val", "train"))
            loco.write(pa.table({**base, "role": pa.array(loco_roles), "cluster": pa.array(cluster.astype(np.int32))}, schema=split_schema))
    return root


def run_score(root: Path, params: dict) -> dict:
    """score_model on a tree from `write_score_inputs`: from the predictions file (streaming API),
    or, for an older package whose score_model takes a table, from the whole table."""
    import inspect
    from types import SimpleNamespace

    import xtalbench.evaluate.scoring as scoring

    spec = SimpleNamespace(**SCORE_SPEC)
    path = root / "datasets" / "bench" / "predictions" / "fake.parquet"
    streaming = "batch_rows" in inspect.signature(scoring.score_model).parameters
    result = scoring.score_model("bench", spec, str(path) if streaming else pq.read_table(path), params, {}, root=root)
    test = result["strategies"]["random"]["folds"]["0"]["test"]
    return {"rows": result["coverage"]["n_predictions"], "api": "streamed" if streaming else "whole table", "package": scoring.__file__,
            "force_mae_meV_per_A": test["force_mae_meV_per_A"], "metrics_json": str(root / "metrics" / "bench" / "fake.json")}


def _child(stage: str, input_path: str, workdir: str) -> None:
    started = time.perf_counter()
    result = run_stage(stage, Path(input_path), Path(workdir))
    result["seconds"] = time.perf_counter() - started
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result["peak_mb"] = max(own, children) / 1024  # Linux: ru_maxrss in KiB
    print("BENCH " + json.dumps(result), flush=True)


def measure(stage: str, input_path: Path, workdir: Path, extra: list[str] | None = None, pythonpath: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", stage, str(input_path), str(workdir), *(extra or [])]
    env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else None
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"stage {stage} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][6:])


def _generate_child(path: str, rows: str, seed: str, emt_only: str) -> None:
    started = time.perf_counter()
    generate(Path(path), int(rows), int(seed), emt_only=emt_only == "1", progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("BENCH " + json.dumps({"rows": int(rows), "seconds": time.perf_counter() - started, "peak_mb": peak}), flush=True)


def measure_generate(path: Path, rows: int, seed: int, emt_only: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--generate-child", str(path), str(rows), str(seed), "1" if emt_only else "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"generate failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][6:])


def arrow_mb(path: Path) -> float:
    """Uncompressed size of a Parquet file's data: what reading it whole would roughly hold."""
    meta = pq.ParquetFile(path).metadata
    total = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return total / 2**20


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        _child(*argv[1:4])
        return 0
    if argv and argv[0] == "--generate-child":
        _generate_child(*argv[1:5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="frames in the generated table (default 1,000,000)")
    parser.add_argument("--params", default=DEFAULT_PARAMS, help=f"params file for dedup, featurize and split (default {DEFAULT_PARAMS})")
    parser.add_argument("--fetch-rows", type=int, default=None, help="frames in the MPtrj JSON the fetch stage parses (default --rows)")
    parser.add_argument("--dedup-rows", type=int, default=None, help="default --rows")
    parser.add_argument("--dedup-level", default=None, help="composition | structure | both (default: params dedup.level)")
    parser.add_argument("--featurize-rows", type=int, default=None, help="default --rows; split runs on the same frames")
    parser.add_argument("--evaluate-rows", default=None, help="frame counts for evaluate, comma-separated (default: rows/10,rows: memory should stay flat)")
    parser.add_argument("--evaluate-supported", type=float, default=0.1, help="share of frames EMT can predict (the rest is skipped)")
    parser.add_argument("--evaluate-executor", default="local", choices=["local", "dask"])
    parser.add_argument("--score-rows", default=None, help="frame counts for score, comma-separated (default: rows/10,rows)")
    parser.add_argument("--score-baseline-src", default=None, help="also score with the xtalbench package in this dir (PYTHONPATH), as a baseline")
    parser.add_argument("--stages", default="baseline,generate,fetch,dedup,featurize,split,evaluate,score")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="keep files here (default: a temporary directory)")
    parser.add_argument("--write", action="store_true", help="record the measured rates in benchmarks/throughputs.json")
    args = parser.parse_args(argv)
    args.evaluate_rows = args.evaluate_rows or f"{max(1, args.rows // 10)},{args.rows}"
    args.score_rows = args.score_rows or f"{max(1, args.rows // 10)},{args.rows}"
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    os.environ["XTALBENCH_BENCH_EVALUATE_EXECUTOR"] = args.evaluate_executor  # read by the evaluate children
    os.environ["XTALBENCH_BENCH_PARAMS"] = args.params  # read by every child
    if args.dedup_level:
        os.environ["XTALBENCH_BENCH_DEDUP_LEVEL"] = args.dedup_level  # read by the dedup children

    with tempfile.TemporaryDirectory(prefix="xtalbench-bench-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        frames = work / "frames.parquet"
        results: dict[str, dict] = {}
        print(f"generating {args.rows:,} MPtrj-shaped frames in {work} ...", flush=True)
        results["generate"] = measure_generate(frames, args.rows, args.seed)
        results["generate"]["input_mb"] = 0.0
        for stage in stages:
            if stage == "generate":
                continue
            if stage == "baseline":
                results[stage] = measure(stage, frames, work)
                results[stage]["input_mb"] = 0.0
                continue
            if stage == "fetch":
                n = min(args.fetch_rows or args.rows, args.rows)
                source = write_mptrj_json(frames, work / "mptrj.json", n)
                input_mb = source.stat().st_size / 2**20
            elif stage == "evaluate":
                sizes = sorted(int(x) for x in str(args.evaluate_rows).split(",") if x.strip())
                for n in sizes:  # independent of --rows: its own generated input per size
                    source = generate_evaluate_input(work / f"evaluate_{n}.parquet", n, args.seed, args.evaluate_supported)
                    name = "evaluate" if n == sizes[-1] else f"evaluate@{n}"
                    print(f"{name}: {n:,} frames ({args.evaluate_supported:.0%} EMT-only, {args.evaluate_executor}) ...", flush=True)
                    results[name] = measure(stage, source, work)
                    results[name]["input_mb"] = arrow_mb(source)
                    source.unlink()
                continue
            elif stage == "score":
                sizes = sorted(int(x) for x in str(args.score_rows).split(",") if x.strip())
                for n in sizes:
                    n = min(n, args.rows)
                    root = write_score_inputs(frames, work / f"score_{n}", n if n < args.rows else 0, args.seed)
                    input_mb = arrow_mb(root / "datasets" / "bench" / "dedup.parquet") + arrow_mb(root / "datasets" / "bench" / "predictions" / "fake.parquet")
                    variants = [("score", None)] + ([("score-old", args.score_baseline_src)] if args.score_baseline_src else [])
                    written = []
                    for label, src in variants:
                        name = label if n == sizes[-1] else f"{label}@{n}"
                        print(f"{name}: {n:,} frames ...", flush=True)
                        results[name] = measure(stage, root, work, pythonpath=src)
                        results[name]["input_mb"] = input_mb
                        written.append(Path(results[name]["metrics_json"]).read_bytes())
                    if len(written) > 1:
                        print(f"  metrics JSON byte-identical to the baseline's: {written[0] == written[1]}", flush=True)
                continue
            else:
                key = "featurize" if stage == "split" else stage.split("-")[0]  # split reads featurize's output
                n = min(getattr(args, f"{key}_rows", None) or args.rows, args.rows)
                source = frames if n >= args.rows else work / f"{key}_input.parquet"
                if not source.exists():
                    head(frames, source, n)
                input_mb = arrow_mb(source)
            print(f"{stage}: {n:,} frames ...", flush=True)
            results[stage] = measure(stage, source, work)
            results[stage]["input_mb"] = input_mb
        results["generate"]["input_mb"] = arrow_mb(frames)
        baseline = results.get("baseline", {}).get("peak_mb", 0.0)
        print()
        print(f"{'stage':<16}{'frames':>10}{'time s':>9}{'frames/s':>10}{'peak RSS MB':>13}{'- baseline':>12}{'input MB':>10}{'peak/input':>11}{'out MB':>9}")
        for stage, r in results.items():
            rate = r["rows"] / r["seconds"] if r["rows"] and r["seconds"] else float("nan")
            ratio = r["peak_mb"] / r["input_mb"] if r.get("input_mb") else float("nan")
            out = f"{r['output_mb']:>9.0f}" if r.get("output_mb") is not None else f"{'':>9}"
            print(f"{stage:<16}{r['rows']:>10,}{r['seconds']:>9.1f}{rate:>10.1f}{r['peak_mb']:>13.0f}{r['peak_mb'] - baseline:>12.0f}{r.get('input_mb', 0):>10.0f}{ratio:>11.2f}{out}")
        if "featurize" in results:
            print(f"featurize: {results['featurize']['n_features']:,} SOAP columns ({args.params}); "
                  f"features on disk {results['featurize']['output_mb'] / max(1, results['featurize']['rows']) * 2**20 / 1024:.1f} KB per frame")
        if "split" in results:
            print(f"split: strategies {results['split']['strategies']}, LOCO cluster sizes (frames) {results['split']['loco_clusters']}")
        runs = sorted((r["rows"], s) for s, r in results.items() if s.startswith("evaluate"))
        for _, s in runs:
            r = results[s]
            print(f"{s}: {r['predicted']:,} predicted + {r['skipped']:,} skipped = {r['rows']:,} ({r['executor']}); "
                  f"EMT inference {r['structures_per_s']} structures/s, {r['atoms_per_s']} atoms/s; output {r['output_mb']:.0f} MB")
        if len(runs) > 1:
            (n0, s0), (n1, s1) = runs[0], runs[-1]
            growth = (results[s1]["peak_mb"] - baseline) / max(1.0, results[s0]["peak_mb"] - baseline)
            print(f"evaluate peak RSS at {n1:,} vs {n0:,} frames ({n1 / n0:.0f}x the input): "
                  f"{results[s1]['peak_mb']:.0f} vs {results[s0]['peak_mb']:.0f} MB, {results[s1]['peak_mb'] / results[s0]['peak_mb']:.2f}x "
                  f"({growth:.2f}x above the baseline)")
        for label in ("score", "score-old"):
            runs = sorted((r["rows"], s) for s, r in results.items() if s == label or s.startswith(label + "@"))
            if len(runs) > 1:
                (n0, s0), (n1, s1) = runs[0], runs[-1]
                per_frame = (results[s1]["peak_mb"] - results[s0]["peak_mb"]) * 2**20 / (n1 - n0)
                print(f"{label} ({results[s1]['api']}) peak RSS at {n1:,} vs {n0:,} frames: {results[s1]['peak_mb']:.0f} vs {results[s0]['peak_mb']:.0f} MB, "
                      f"{per_frame:.0f} bytes per extra frame (→ {per_frame * 1e6 / 2**30:.2f} GB per 1M frames)")
        over = [s for s, r in results.items() if r["peak_mb"] > 4096]
        print(f"\nall stages under 4 GB peak: {not over}" + (f" (over: {over})" if over else ""))
        (work / "results.json").write_text(json.dumps({"argv": sys.argv[1:], "results": results}, indent=2) + "\n")
        if args.write:
            record(results, args)
    return 0


def record(results: dict[str, dict], args: argparse.Namespace) -> None:
    """Store measured rates/peaks in throughputs.json under `stages.<stage>.measured`-style keys."""
    data = json.loads(THROUGHPUTS.read_text()) if THROUGHPUTS.exists() else {"stages": {}}
    argv = [a for a in sys.argv[1:] if a != "--write"]
    if "--workdir" in argv:  # a path on the machine that ran it: not part of how to reproduce
        i = argv.index("--workdir")
        del argv[i : i + 2]
    command = " ".join(["benchmarks/bench_scale.py", *argv])
    data["command"] = command
    stamp = time.strftime("%Y-%m-%d")
    baseline = results.get("baseline", {}).get("peak_mb", 0.0)
    for stage in ("fetch", "dedup", "featurize", "split"):
        r = results.get(stage)
        if not r or not r["rows"]:
            continue
        entry = data["stages"].setdefault(stage, {})
        measured = {"rate_per_s": round(r["rows"] / r["seconds"], 1), "peak_mb": round(r["peak_mb"]),
                    "source": f"measured here {stamp}: {command} ({r['rows']:,} frames, {args.params})"}
        if stage == "dedup" and args.dedup_level:  # plan estimates the params' level, not an override
            print(f"not recording dedup: --dedup-level {args.dedup_level} overrides the params' level")
            continue
        if stage == "featurize":  # the rate depends on the SOAP size: one entry per n_max x l_max
            import yaml

            from xtalbench.tools.plan import soap_size

            entry.setdefault("by_soap", {})[soap_size(yaml.safe_load((ROOT / args.params).read_text()))] = measured
            continue
        if stage == "split":  # memory line from the recorded fixed part through this run's peak
            entry.pop("fixed_seconds", None)
            base = float((entry.get("memory") or {}).get("base_mb", baseline))
            measured["memory"] = {"base_mb": round(base), "mb_per_row": round(max(0.0, r["peak_mb"] - base) / r["rows"], 5)}
        entry.update(measured)
    r = results.get("evaluate")
    if r and r["rows"]:
        models = data["stages"].setdefault("evaluate", {}).setdefault("models", {})
        models["emt"] = {"rate_per_s": r["structures_per_s"], "peak_mb": round(r["peak_mb"]),
                         "source": f"measured {stamp}: {command} (evaluate.evaluate, {r['rows']:,} frames of which {r['predicted']:,} "
                                   f"predicted, {r['executor']}; rate = EMT inference structures/s)"}
    if "baseline" in results:
        data.setdefault("machine", {})["baseline_rss_mb"] = round(results["baseline"]["peak_mb"])
    THROUGHPUTS.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {THROUGHPUTS}")


if __name__ == "__main__":
    raise SystemExit(main())
