"""The `phonons` and `md` stages over `dynamics.models` × materials, and σ⁽²⁾ of user trajectories."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from xtalbench.core.errors import InputError, XtalbenchError
from xtalbench.core.io import StageOutputs
from xtalbench.core.project import write_json
from xtalbench.dynamics.params import DynamicsParams


class UnknownMaterialError(XtalbenchError, ValueError):
    """A material in params that has no reference folder."""


def reference_folder(params: DynamicsParams, material: str) -> Path:
    folder = Path(params.data) / material
    if not (folder / "phonopy_disp.yaml").exists():
        have = sorted(p.name for p in Path(params.data).glob("*/phonopy_disp.yaml")) if Path(params.data).exists() else []
        raise UnknownMaterialError(f"params.yaml dynamics: material {material!r} has no {folder}/phonopy_disp.yaml (have: {', '.join(p for p in have) or 'none'})")
    return folder


def model_functional(spec: Any, params: DynamicsParams) -> str:
    """The level of theory of a model's training labels: its YAML's `functional`, else by training-set name."""
    declared = getattr(spec, "functional", None)
    if declared and declared != "unknown":
        return str(declared)
    return params.training_set_functional.get(spec.training_set.name, "unknown")


def theory_note(ref: str, model: str) -> dict[str, Any]:
    """Whether the reference and the model's training labels share a functional, said in words.

    A `PBE/PBE+U` model (MPtrj) counts as PBE: MP applies +U only to oxides and fluorides of
    Co, Cr, Fe, Mn, Mo, Ni, V, W, and none of the phonopy references is one.
    """
    same = ref in model.split("/")
    note = "same functional" if same else f"reference is {ref}, the model's training labels are {model}: not like with like"
    return {"functional_reference": ref, "functional_model": model, "like_with_like": same, "theory_note": note}


def load_predictor(name: str, params: DynamicsParams):
    from xtalbench.core.device import resolve_device
    from xtalbench.models import load_model, load_spec

    if params.threads:
        import torch

        torch.set_num_threads(params.threads)
    spec = load_spec(name)
    dtype = (spec.defaults or {}).get("dtype")
    return spec, load_model(spec, device=resolve_device(params.device), dtype=dtype, progress=False)


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(vals)) if vals else None


def run_phonons(params: DynamicsParams, models: list[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Phonon errors of every model on every reference; writes `phonons.json` and the plots folder."""
    from xtalbench.dynamics.phonons import compare_material, model_phonons
    from xtalbench.dynamics.plots import dispersion_png, write_csv
    from xtalbench.dynamics.reference import load_reference, read_functional
    from xtalbench.models import UnsupportedElementError

    p = params.phonons
    models = models or params.models
    refs = {m: (load_reference(reference_folder(params, m), nac=p.nac), read_functional(reference_folder(params, m))) for m in p.materials}
    result: dict[str, Any] = {"materials": {}, "models": {}, "params": p.model_dump()}
    for material, (ref, functional) in refs.items():
        result["materials"][material] = {
            "functional": functional.name,
            "functional_tags": functional.tags,
            "nac": ref.nac_params is not None,
            "supercell_atoms": len(ref.supercell),
            "displacements": len(ref.displacements),
        }
    with StageOutputs("phonons") as out:
        plots_dir = out.dir(f"{params.plots_dir}/phonons")
        for name in models:
            spec, predictor = load_predictor(name, params)
            mf = model_functional(spec, params)
            per: dict[str, Any] = {}
            band_rows: list[list[Any]] = []
            dos_rows: list[list[Any]] = []
            start = time.perf_counter()
            structures = 0
            for material, (ref, functional) in tqdm(refs.items(), desc=f"phonons {name}", unit="material", disable=not progress):
                try:
                    mp = model_phonons(ref, predictor, params.batch_size, p.subtract_residual_forces)
                except UnsupportedElementError as error:
                    per[material] = {"skipped": str(error)}
                    continue
                except Exception as error:  # noqa: BLE001 - a model failing on one material is a result, not a crash
                    per[material] = {"skipped": f"model failed: {type(error).__name__}: {error}"}
                    continue
                metrics, plot = compare_material(ref, mp, p.mesh, p.band_npoints, p.dos_pitch_thz, p.imaginary_tol_thz)
                structures += mp.n_structures
                per[material] = {
                    **metrics,
                    **theory_note(functional.name, mf),
                    "nac": ref.nac_params is not None,
                    "structures_predicted": mp.n_structures,
                    "predict_calls": mp.n_predict_calls,
                    "predict_seconds": mp.seconds,
                    "residual_force_max_eV_A": mp.residual_force_max,
                }
                dispersion_png(plots_dir / name / f"{material}_dispersion.png", plot, material, name, functional.name)
                b_ref, b_mod = plot["bands_ref"], plot["bands_model"]
                for k in range(len(b_ref["distances"])):
                    for band in range(b_ref["frequencies"].shape[1]):
                        band_rows.append([material, int(b_ref["segment"][k]), float(b_ref["distances"][k]), band, float(b_ref["frequencies"][k, band]), float(b_mod["frequencies"][k, band])])
                freq, d_ref, d_mod = plot["dos"]
                dos_rows += [[material, float(f), float(a), float(b)] for f, a, b in zip(freq, d_ref, d_mod)]
            write_csv(plots_dir / name / "bands.csv", ["material", "segment", "distance", "band", "frequency_dft_THz", "frequency_model_THz"], band_rows, digits=4)
            write_csv(plots_dir / name / "dos.csv", ["material", "frequency_THz", "dos_dft", "dos_model"], dos_rows, digits=4)
            done = [v for v in per.values() if "skipped" not in v]
            result["models"][name] = {
                "functional": mf,
                "status": getattr(spec, "status", "ok"),
                "materials": per,
                "median": {
                    key: _median([v[key] for v in done])
                    for key in ("rmse_omega2_THz2", "rmse_frequency_THz", "rmse_group_velocity_THz_A", "max_frequency_error_THz")
                },
                "like_with_like_median": {
                    key: _median([v[key] for v in done if v["like_with_like"]]) for key in ("rmse_omega2_THz2", "rmse_group_velocity_THz_A")
                },
                "imaginary_materials": sorted(m for m, v in per.items() if "skipped" not in v and v["imaginary_mesh"]["count"] > 0),
                "structures_predicted": structures,
                "seconds": time.perf_counter() - start,
            }
        write_json(result, out.path(f"{params.metrics_dir}/phonons.json"))
    return result


def md_start(ref, params: DynamicsParams):
    """The MD start structure and whether the reference's Φ applies (MD cell = the phonopy supercell)."""
    from xtalbench.dynamics.phonons import phonopy_to_atoms

    supercell = phonopy_to_atoms(ref.supercell)
    wanted = params.md.supercell
    if wanted is None or np.allclose(np.diag(wanted), ref.supercell_matrix):
        return supercell, True
    return phonopy_to_atoms(ref.unitcell).repeat(tuple(wanted)), False


def run_md_stage(params: DynamicsParams, models: list[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """MD of every model on `dynamics.md.materials`, σ⁽²⁾ with Φ_DFT and Φ_model, classes and confusion matrices."""
    from ase.io import write

    from xtalbench.dynamics.anharmonicity import confusion, sigma_trajectory
    from xtalbench.dynamics.calculator import PredictorCalculator
    from xtalbench.dynamics.md import run_md
    from xtalbench.dynamics.phonons import model_phonons
    from xtalbench.dynamics.plots import write_csv
    from xtalbench.dynamics.reference import load_reference, read_functional
    from xtalbench.models import UnsupportedElementError

    a = params.anharmonicity
    models = models or params.models
    result: dict[str, Any] = {"params": params.md.model_dump(), "classes": {"weak": f"< {a.weak}", "strong": f"{a.weak}-{a.strong}", "unstable": f"> {a.strong}"}, "models": {}}
    refs = {m: (load_reference(reference_folder(params, m)), read_functional(reference_folder(params, m))) for m in params.md.materials}
    sampled: dict[str, dict[str, tuple[list[Any], list[float]]]] = {}  # material → model → (frames, σ_DFT(t)) after burn-in
    with StageOutputs("md") as out:
        plots_dir = out.dir(f"{params.plots_dir}/md")
        traj_dir = out.dir(f"{params.out_dir}/md")
        for name in models:
            spec, predictor = load_predictor(name, params)
            mf = model_functional(spec, params)
            per: dict[str, Any] = {}
            rows: list[list[Any]] = []
            for material, (ref, functional) in tqdm(refs.items(), desc=f"md {name}", unit="material", disable=not progress):
                atoms, phi_applies = md_start(ref, params)
                try:
                    fc_model = model_phonons(ref, predictor, params.batch_size, params.phonons.subtract_residual_forces).phonon.force_constants if phi_applies else None
                except UnsupportedElementError as error:
                    per[material] = {"skipped": str(error)}
                    continue
                except Exception as error:  # noqa: BLE001 - reported like an MD failure
                    per[material] = {"skipped": f"model failed on the force-constant displacements: {type(error).__name__}: {error}"}
                    continue
                run = run_md(atoms, PredictorCalculator(predictor, params.batch_size), params.md, progress=False)
                entry: dict[str, Any] = {**run.summary, **theory_note(functional.name, mf)}
                sigma = None
                if phi_applies and run.frames:
                    sigma = sigma_trajectory(run.frames, atoms, {"dft": ref.force_constants, "model": fc_model}, burn_in=run.summary["burn_in_frames"], weak=a.weak, strong=a.strong, source=f"{name}/{material}")
                    for key in ("dft", "model"):
                        entry[f"sigma_{key}"] = {k: v for k, v in sigma[key].items() if k != "sigma_t"}
                else:
                    entry["sigma_skipped"] = "MD supercell differs from the reference's force-constant supercell" if not phi_applies else "no frames"
                start = run.summary["burn_in_frames"]
                if len(run.frames) - start >= 2:
                    sampled.setdefault(material, {})[name] = (run.frames[start:], sigma["dft"]["sigma_t"][start:] if sigma else [float("nan")] * (len(run.frames) - start))
                per[material] = entry
                traj = traj_dir / name / f"{material}.extxyz"
                traj.parent.mkdir(parents=True, exist_ok=True)
                write(traj, run.frames, format="extxyz")
                for k in range(len(run.step)):
                    rows.append([
                        material, int(run.step[k]), float(run.time_fs[k]), float(run.epot[k] / run.natoms), float(run.etot[k] / run.natoms), float(run.temperature[k]),
                        float(sigma["dft"]["sigma_t"][k]) if sigma else "", float(sigma["model"]["sigma_t"][k]) if sigma else "",
                    ])
            write_csv(plots_dir / f"{name}.csv", ["material", "step", "time_fs", "epot_eV_per_atom", "etot_eV_per_atom", "temperature_K", "sigma_dft", "sigma_model"], rows)
            done = {m: v for m, v in per.items() if "skipped" not in v}
            classes_dft = [v.get("sigma_dft", {}).get("class") for v in done.values()]
            classes_model = [v.get("sigma_model", {}).get("class") for v in done.values()]
            result["models"][name] = {
                "functional": mf,
                "status": getattr(spec, "status", "ok"),
                "materials": per,
                "completed": sorted(m for m, v in done.items() if v["completed"]),
                "failed": sorted(m for m, v in done.items() if not v["completed"]),
                "confusion_phi_dft_vs_phi_model": confusion(classes_dft, classes_model, f"{name} Φ_DFT", f"{name} Φ_model"),
            }
        pairs: dict[str, Any] = {}
        for m1, m2 in itertools.combinations(sorted(result["models"]), 2):
            shared = sorted(set(result["models"][m1]["materials"]) & set(result["models"][m2]["materials"]))
            c1 = [result["models"][m1]["materials"][m].get("sigma_dft", {}).get("class") for m in shared]
            c2 = [result["models"][m2]["materials"][m].get("sigma_dft", {}).get("class") for m in shared]
            pairs[f"{m1}__vs__{m2}"] = confusion(c1, c2, m1, m2)
        result["confusion_between_models"] = pairs
        result["configuration_maps"] = write_maps(sampled, params, plots_dir / "maps")
        write_json(result, out.path(f"{params.metrics_dir}/md.json"))
    return result


def write_maps(sampled: dict[str, dict[str, tuple[list[Any], list[float]]]], params: DynamicsParams, folder: Path) -> dict[str, Any]:
    """One SOAP kernel-PCA map per material sampled by ≥ 2 trajectories: PNG, CSV, and the overlap shares."""
    from xtalbench.dynamics.maps import configuration_map, map_png
    from xtalbench.dynamics.plots import write_csv

    m = params.maps
    out: dict[str, Any] = {}
    if not m.enabled:
        return out
    for material, by_source in sorted(sampled.items()):
        if len(by_source) < 2:
            out[material] = {"skipped": "fewer than two trajectories (add models to dynamics.models)"}
            continue
        result = configuration_map({k: v[0] for k, v in by_source.items()}, {k: v[1] for k, v in by_source.items()}, kernel=m.kernel,
                                   support_quantile=m.support_quantile, r_cut=m.r_cut, n_max=m.n_max, l_max=m.l_max)  # fmt: skip
        map_png(folder / f"{material}.png", result, material)
        rows = [[str(l), float(e[0]), float(e[1]), float(s)] for l, e, s in zip(result["labels"], result["embedding"], result["sigma"])]
        write_csv(folder / f"{material}.csv", ["source", "kpc1", "kpc2", "sigma_dft"], rows)
        out[material] = {"kernel": m.kernel, "frames": {k: len(v[0]) for k, v in by_source.items()}, "overlap": result["overlap"]}
    return out


def run_trajectories(params: DynamicsParams, trajectories: list[tuple[str, str]], output: str, models: list[str] | None = None, burn_in: int = 0) -> dict[str, Any]:
    """σ⁽²⁾ of user trajectories (extxyz with DFT forces): reference forces vs each model's forces on the same frames."""
    from ase import Atoms
    from ase.io import read

    from xtalbench.dynamics.anharmonicity import confusion, sigma_trajectory
    from xtalbench.dynamics.calculator import predict_atoms
    from xtalbench.dynamics.phonons import model_phonons, phonopy_to_atoms
    from xtalbench.dynamics.reference import load_reference

    a = params.anharmonicity
    models = models or params.models
    loaded = {name: load_predictor(name, params)[1] for name in models}
    result: dict[str, Any] = {"trajectories": {}, "models": models}
    sampled: dict[str, dict[str, tuple[list[Any], list[float]]]] = {}
    for path, material in trajectories:
        try:
            frames = read(path, index=":")
        except Exception as error:  # noqa: BLE001 - ase raises many types on a bad file
            raise InputError(path, f"cannot read the trajectory: {error}") from None
        if isinstance(frames, Atoms):
            frames = [frames]
        ref = load_reference(reference_folder(params, material))
        atoms = phonopy_to_atoms(ref.supercell)
        entry: dict[str, Any] = {"material": material}
        own = sigma_trajectory(frames, atoms, {"dft": ref.force_constants}, burn_in=burn_in, weak=a.weak, strong=a.strong, source=path)
        entry["reference_forces"] = own["dft"]
        sampled.setdefault(material, {})[Path(path).stem] = (frames[burn_in:], own["dft"]["sigma_t"][burn_in:])
        for name, predictor in loaded.items():
            forces = np.asarray(predict_atoms(predictor, frames, params.batch_size)["forces"], dtype=np.float64)
            fc_model = model_phonons(ref, predictor, params.batch_size, params.phonons.subtract_residual_forces).phonon.force_constants
            s = sigma_trajectory(frames, atoms, {"dft": ref.force_constants, "model": fc_model}, forces=forces, burn_in=burn_in, weak=a.weak, strong=a.strong, source=path)
            entry[name] = {k: s[k] for k in ("dft", "model")}
        result["trajectories"][path] = entry
    ref_classes = [e["reference_forces"]["class"] for e in result["trajectories"].values()]
    result["confusion_vs_reference"] = {
        f"{name}_{key}": confusion(ref_classes, [e[name][key]["class"] for e in result["trajectories"].values()], "reference forces, Φ_DFT", f"{name} forces, Φ_{key}")
        for name in models
        for key in ("dft", "model")
    }
    maps = {m: v for m, v in sampled.items() if len(v) >= 2}
    result["configuration_maps"] = write_maps(maps, params, Path(output).parent / f"{Path(output).stem}_maps") if maps else {}
    write_json(result, output)
    return result
