"""`xtalbench phonons [--model M ...]`: model phonons vs the DFT references (params `dynamics`).

`--model` / `--material` narrow a run for a quick look; the outputs then hold only that subset.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", help="model name (repeatable; default: dynamics.models)")
    parser.add_argument("--material", action="append", help="material (repeatable; default: dynamics.phonons.materials)")


def run(args: argparse.Namespace) -> int:
    from xtalbench.core.params import parse_section
    from xtalbench.core.project import load_params
    from xtalbench.dynamics.params import DynamicsParams
    from xtalbench.dynamics.stage import run_phonons

    params = parse_section(DynamicsParams, load_params(args.params), "dynamics")
    if args.material:
        params = params.model_copy(update={"phonons": params.phonons.model_copy(update={"materials": args.material})})
    result = run_phonons(params, args.model)
    for name, entry in result["models"].items():
        med = entry["median"]
        print(f"{name}: median RMSE(ω²) {med['rmse_omega2_THz2']:.3g} THz², RMSE(v_g) {med['rmse_group_velocity_THz_A']:.3g} THz·Å, "
              f"imaginary modes in {entry['imaginary_materials'] or 'none'} ({entry['seconds']:.0f} s)")
    return 0
