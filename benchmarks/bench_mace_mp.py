"""MACE-MP-0 inference speed on this machine, from architecture-equivalent models (random weights).

The foundation checkpoints cannot be downloaded here, but inference time does not depend on the
weights' values: it depends on the architecture and the graphs. This builds `ScaleShiftMACE`
models with the hyperparameters of the MACE-MP-0 training scripts (ACEsuit/mace-mp,
`mace_mp_0/2023-12-10-mace-128-L0.sh` = small, `2023-12-03-mace-128-L1.sh` = medium: 128
channels, max_L 0 / 1, max_ell 3, correlation 3, 2 interactions, r_max 6 Å, 10 Bessel functions,
89 elements), saves each as a .model file and times xtalbench's batched `MacePredictor` on
MPtrj-shaped frames (benchmarks/bench_scale.py's generator: 1-40 atoms of 62 elements), one child
process per model so each peak RSS is its own. The baseline in the same run is the pipeline's
tiny MACE architecture (params.yaml `train.hyper`: 32 channels, max_L 0, r_max 5 Å).

    .venv/bin/python benchmarks/bench_mace_mp.py [--frames 200] [--write]

`--write` records the measured rates as `evaluate.models.mace-mp-small/-medium` in
benchmarks/throughputs.json (what `xtalbench plan` uses), marked architecture-equivalent.
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

ROOT = Path(__file__).resolve().parents[1]
THROUGHPUTS = ROOT / "benchmarks" / "throughputs.json"

# name -> (channels, max_L, r_max, model card); MACE-MP-0 values from the ACEsuit/mace-mp training scripts
ARCHITECTURES = {
    "tiny": (32, 0, 5.0, None),
    "mace-mp-small": (128, 0, 6.0, "models/mace-mp-small.yaml"),
    "mace-mp-medium": (128, 1, 6.0, "models/mace-mp-medium.yaml"),
}


def build_model(channels: int, max_L: int, r_max: float, seed: int = 0):
    """A randomly initialised ScaleShiftMACE of the MACE-MP-0 family (89 elements, Z = 1..89)."""
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    import mace  # noqa: F401  # must precede e3nn
    import numpy as np
    import torch
    from e3nn import o3
    from mace import modules

    torch.manual_seed(seed)
    hidden = " + ".join(f"{channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(max_L + 1))
    zs = list(range(1, 90))
    return modules.ScaleShiftMACE(
        r_max=r_max, num_bessel=10, num_polynomial_cutoff=5, max_ell=3,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=2, num_elements=len(zs), hidden_irreps=o3.Irreps(hidden), MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(zs)), avg_num_neighbors=40.0, atomic_numbers=zs, correlation=3,
        gate=torch.nn.functional.silu, radial_MLP=[64, 64, 64], atomic_inter_scale=1.0, atomic_inter_shift=0.0,
    )


def _child(name: str, model_path: str, frames: str, batch_size: str) -> None:
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from xtalbench.models.mace import MacePredictor

    rows = pq.read_table(frames).to_pylist()
    predictor = MacePredictor.from_file(model_path, device="cpu", dtype="float32", name=name, progress=False)
    predictor.predict(rows[:8], batch_size=int(batch_size))  # warm-up
    started = time.perf_counter()
    out = predictor.predict(rows, batch_size=int(batch_size))
    seconds = time.perf_counter() - started
    atoms = sum(len(r["numbers"]) for r in rows)
    params = sum(p.numel() for p in predictor.model.parameters())
    result = {"name": name, "frames": len(rows), "atoms": atoms, "seconds": seconds, "params": params, "threads": torch.get_num_threads(),
              "finite": bool(np.isfinite(out["energy"]).all()), "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print("BENCH " + json.dumps(result), flush=True)


def measure(name: str, model_path: Path, frames: Path, batch_size: int) -> dict:
    cmd = [sys.executable, __file__, "--child", name, str(model_path), str(frames), str(batch_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][6:])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        _child(*argv[1:5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200, help="MPtrj-shaped frames to predict per model")
    parser.add_argument("--batch-size", type=int, default=16, help="the foundation model cards' default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="record the rates in benchmarks/throughputs.json")
    args = parser.parse_args(argv)

    import warnings

    import torch

    warnings.filterwarnings("ignore")  # e3nn/torch codegen deprecation noise while building models
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_scale import synthetic_chunk

    from xtalbench.core.project import write_parquet

    results = {}
    with tempfile.TemporaryDirectory(prefix="xtalbench-mace-mp-") as tmp:
        frames = Path(tmp) / "frames.parquet"
        write_parquet(synthetic_chunk(0, args.frames, args.seed), frames)
        for name, (channels, max_L, r_max, _) in ARCHITECTURES.items():
            path = Path(tmp) / f"{name}.model"
            torch.save(build_model(channels, max_L, r_max, args.seed), path)
            print(f"{name}: {channels} channels, max_L {max_L}, r_max {r_max} Å ...", flush=True)
            results[name] = measure(name, path, frames, args.batch_size)

    base = results["tiny"]
    print(f"\n{'model':<16}{'params':>11}{'frames/s':>10}{'atoms/s':>10}{'peak MB':>9}{'time vs tiny':>14}")
    for name, r in results.items():
        rate = r["frames"] / r["seconds"]
        print(f"{name:<16}{r['params']:>11,}{rate:>10.2f}{r['atoms'] / r['seconds']:>10.1f}{r['peak_mb']:>9.0f}{r['seconds'] / base['seconds']:>13.1f}x")
    print(f"{base['frames']} MPtrj-shaped frames ({base['atoms']} atoms), batch {args.batch_size}, float32, CPU, {base['threads']} torch threads")
    if not all(r["finite"] for r in results.values()):
        raise SystemExit("a model predicted non-finite energies")
    if args.write:
        record(results, args)
    return 0


def record(results: dict[str, dict], args: argparse.Namespace) -> None:
    data = json.loads(THROUGHPUTS.read_text())
    models = data["stages"]["evaluate"].setdefault("models", {})
    stamp = time.strftime("%Y-%m-%d")
    for name, (channels, max_L, r_max, card) in ARCHITECTURES.items():
        if card is None:
            continue
        r = results[name]
        models[name] = {
            "rate_per_s": round(r["frames"] / r["seconds"], 2), "peak_mb": round(r["peak_mb"]), "threads": r["threads"],
            "source": f"measured here {stamp}, benchmarks/bench_mace_mp.py --frames {args.frames}: architecture-equivalent ScaleShiftMACE "
                      f"({channels} ch, max_L {max_L}, r_max {r_max}, random weights; {r['params']:,} params), MPtrj-shaped frames, "
                      f"batch {args.batch_size}, float32, CPU {r['threads']} threads",
        }
    THROUGHPUTS.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {THROUGHPUTS}")


if __name__ == "__main__":
    raise SystemExit(main())
