"""`xtalbench md`: Langevin MD + σ⁽²⁾ for every model (params `dynamics`), or σ⁽²⁾ of user trajectories.

`xtalbench md --trajectory aimd.extxyz MgO [--trajectory other.extxyz NaCl] --out result.json`
scores trajectories that carry their own (e.g. DFT) forces, in the atom count of the material's
phonopy supercell, against each model's forces on the same frames.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", help="model name (repeatable; default: dynamics.models)")
    parser.add_argument("--material", action="append", help="material (repeatable; default: dynamics.md.materials)")
    parser.add_argument("--trajectory", nargs=2, action="append", metavar=("FILE", "MATERIAL"), help="score this trajectory (extxyz with forces) instead of running MD")
    parser.add_argument("--burn-in", type=int, default=0, help="trajectory frames left out of the σ⁽²⁾ average (with --trajectory)")
    parser.add_argument("--out", default="datasets/dynamics/trajectories.json", help="result file (with --trajectory); maps go to <stem>_maps/ beside it")


def run(args: argparse.Namespace) -> int:
    from xtalbench.core.params import parse_section
    from xtalbench.core.project import load_params
    from xtalbench.dynamics.params import DynamicsParams
    from xtalbench.dynamics.stage import run_md_stage, run_trajectories

    params = parse_section(DynamicsParams, load_params(args.params), "dynamics")
    if args.trajectory:
        result = run_trajectories(params, [tuple(t) for t in args.trajectory], args.out, args.model, args.burn_in)
        for path, entry in result["trajectories"].items():
            print(f"{path}: σ⁽²⁾ (reference forces, Φ_DFT) = {entry['reference_forces']['sigma_mean']:.3f} ({entry['reference_forces']['class']})")
        return 0
    if args.material:
        params = params.model_copy(update={"md": params.md.model_copy(update={"materials": args.material})})
    result = run_md_stage(params, args.model)
    for name, entry in result["models"].items():
        for material, m in entry["materials"].items():
            if "skipped" in m:
                print(f"{name} {material}: skipped ({m['skipped']})")
                continue
            sigma = m.get("sigma_dft", {})
            print(f"{name} {material}: {'completed' if m['completed'] else 'FAILED ' + str(m['failure'])}, "
                  f"<T> {m['temperature_mean_K']:.0f} K, equilibrated {m['equilibration']['equilibrated']}, "
                  f"σ⁽²⁾(Φ_DFT) {sigma.get('sigma_mean', float('nan')):.3f} ({sigma.get('class')}), {m['steps_per_s']:.1f} steps/s")
    return 0
