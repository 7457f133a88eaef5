"""Which energy convention does each model predict? Evidence from real MatterSim frames.

For a seeded sample of `mptrj-random-1k` frames (raw, uncorrected MPtrj DFT totals), compute the
MP2020 correction each frame's composition would get (pymatgen `MaterialsProject2020Compatibility`,
GGA+U where MP applies +U: oxides/fluorides of Co Cr Fe Mn Mo Ni V W) and regress every model's
error (prediction − label, eV/atom) on that correction (eV/atom):

- slope ≈ 1, small error where the correction is 0 → the model predicts MP2020-corrected totals;
- slope ≈ 0, small errors everywhere → raw totals of the labels' functional (PBE/PBE+U);
- errors large on +U frames only, and on the others per-element offsets → a different level of
  theory (MatPES: PBE without +U, PBE 54 POTCARs).

Elemental frames in the sample are also compared with MP's elemental reference entries
(`mp-references`, energy per atom of the ground state): labels and models on the same scale.

    .venv/bin/python benchmarks/model_conventions.py [--n 40] [--models sevennet-0,chgnet,...] [--out FILE]
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SETS = SHARED / "mattersim-benchmarks"
REFS = SHARED / "mp-references" / "2023-02-07-mp-elemental-reference-entries.json.gz"
U_VALUES = {"Co": 3.32, "Cr": 3.7, "Fe": 5.3, "Mn": 3.9, "Mo": 4.38, "Ni": 6.2, "V": 3.25, "W": 6.2}
MODELS = ["chgnet", "sevennet-0", "m3gnet-mp-2021", "m3gnet-matpes-pbe", "tensornet-matpes-pbe"]


def mp2020_correction(symbols: list[str], energy: float) -> float:
    """MP2020 correction (eV, whole cell) of a raw GGA/GGA+U total with this composition."""
    import warnings

    from pymatgen.core import Composition
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
    from pymatgen.entries.computed_entries import ComputedEntry

    comp = Composition(" ".join(symbols))
    names = {el.symbol for el in comp}
    hubbards = {el: U_VALUES[el] for el in names if el in U_VALUES} if names & {"O", "F"} else {}
    entry = ComputedEntry(comp, energy, parameters={"run_type": "GGA+U" if hubbards else "GGA", "hubbards": hubbards, "is_hubbard": bool(hubbards)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        processed = MaterialsProject2020Compatibility(check_potcar=False).process_entry(entry)
    if processed is None:
        raise ValueError(f"MP2020 refuses {comp}")
    return float(processed.correction)


def sample(path: Path, n: int, seed: int = 0) -> list[dict]:
    """n frames, half with a non-zero MP2020 correction (when there are that many), seeded."""
    from ase.io import iread

    from xtalbench.core.schema import from_atoms

    rows = []
    for i, atoms in enumerate(iread(str(path), index=":", format="extxyz")):
        if len(atoms) > 40:
            continue
        symbols = atoms.get_chemical_symbols()
        energy = float(atoms.get_potential_energy())
        try:
            corr = mp2020_correction(symbols, energy)
        except ValueError:
            continue
        row = from_atoms(atoms, frame_id=f"{path.name.split('.')[0]}-{i}", material_id=str(atoms.info.get("mptrj_traj_id", i)), source="mattersim")
        row.update(label=energy, correction=corr, symbols=symbols)
        rows.append(row)
    rng = np.random.default_rng(seed)
    corrected = [r for r in rows if abs(r["correction"]) > 1e-9]
    plain = [r for r in rows if abs(r["correction"]) <= 1e-9]
    elemental = [r for r in plain if len(set(r["symbols"])) == 1]
    pick = lambda xs, k: [xs[j] for j in sorted(rng.choice(len(xs), size=min(k, len(xs)), replace=False))]
    return pick(corrected, n // 2) + pick(plain, n // 2) + pick(elemental, 6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--set", default="mptrj-random-1k")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from xtalbench.models import load_model, load_spec

    frames = sample(SETS / f"{args.set}.extxyz.gz", args.n)
    seen, unique = set(), []
    for f in frames:
        if f["frame_id"] not in seen:
            seen.add(f["frame_id"])
            unique.append(f)
    frames = unique
    refs = {}
    with gzip.open(REFS) as handle:
        entries = json.load(handle)
    for k, v in entries.items():
        comp = v["composition"] if isinstance(v["composition"], dict) else json.loads(v["composition"].replace("'", '"'))
        refs[k] = float(v["energy"]) / sum(comp.values())
    nat = np.array([f["nsites"] for f in frames], dtype=float)
    label = np.array([f["label"] for f in frames]) / nat
    corr = np.array([f["correction"] for f in frames]) / nat
    has_corr = np.abs(corr) > 1e-9
    has_u = np.array([bool(set(f["symbols"]) & set(U_VALUES)) and bool(set(f["symbols"]) & {"O", "F"}) for f in frames])
    print(f"{args.set}: {len(frames)} frames, {int(has_corr.sum())} with an MP2020 correction ({int(has_u.sum())} of them GGA+U)")
    elem = [i for i, f in enumerate(frames) if len(set(f["symbols"])) == 1]
    for i in elem:
        el = frames[i]["symbols"][0]
        print(f"  elemental frame {frames[i]['frame_id']} ({el}): label {label[i]:.3f} eV/atom, MP reference {refs.get(el, float('nan')):.3f}")
    report = {"set": args.set, "frames": len(frames), "with_correction": int(has_corr.sum()), "models": {}}
    for name in [m for m in args.models.split(",") if m]:
        spec = load_spec(name)
        predictor = load_model(spec, dtype=spec.defaults.get("dtype") or "float32", progress=False)
        pred = predictor.predict(frames)["energy"] / nat
        predictor.close()
        err = pred - label
        slope = float(np.polyfit(corr, err, 1)[0])
        resid_corrected = err - corr
        entry = {
            "slope_error_vs_correction": round(slope, 3),
            "mae_no_correction_meV": round(1000 * float(np.abs(err[~has_corr]).mean()), 1),
            "mae_corrected_frames_vs_raw_meV": round(1000 * float(np.abs(err[has_corr]).mean()), 1),
            "mae_corrected_frames_vs_mp2020_meV": round(1000 * float(np.abs(resid_corrected[has_corr]).mean()), 1),
            "mae_gga_u_frames_vs_raw_meV": round(1000 * float(np.abs(err[has_u]).mean()), 1) if has_u.any() else None,
            "mean_error_no_correction_meV": round(1000 * float(err[~has_corr].mean()), 1),
            "elemental_error_meV": {frames[i]["symbols"][0]: round(1000 * float(err[i]), 1) for i in elem},
        }
        report["models"][name] = entry
        print(f"{name:22s} " + "  ".join(f"{k}={v}" for k, v in entry.items()), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
