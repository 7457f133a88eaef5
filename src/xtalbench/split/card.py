"""The split card: per strategy and fold, how far the test set really is from training.

Distances are measured per material (the group key: a material's frames move together) in
the kernel-PCA space of the standardised SOAP vectors (`split.loco` embedding), where the
LOCO clusters are cut:
- test→nearest-train distance (median, p95, min) for each test material;
- the training domain radius: p95 of each training material's distance to its nearest other
  training material; test materials beyond it are *outside the training domain*;
- a LOCO fold whose test materials are mostly inside the domain is flagged.
Leakage is checked in the dedup stage's own space: the smallest test→train distance between
composition vectors (same kind and metric as dedup) stands beside the dedup threshold, and
identical `structure_hash` values across train and test are counted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xtalbench.split import SplitData, SplitRun
from xtalbench.split.common import TEST, TRAIN, VAL

ROLES = {"train": TRAIN, "val": VAL, "test": TEST}


def _round(x: float | None, digits: int = 6) -> float | None:
    if x is None or not np.isfinite(x):
        return None
    return float(f"{float(x):.{digits}g}")


def _nearest(train: np.ndarray, query: np.ndarray, metric: str = "euclidean", exclude_self: bool = False) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    k = 2 if exclude_self else 1
    if len(train) < k or len(query) == 0:
        return np.full(len(query), np.nan)
    nn = NearestNeighbors(n_neighbors=k, metric=metric).fit(train)
    d, _ = nn.kneighbors(query)
    return d[:, k - 1]


def _sample(idx: np.ndarray, cap: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    if cap and len(idx) > cap:
        return np.sort(rng.choice(idx, cap, replace=False)), True
    return idx, False


def fold_card(
    roles: np.ndarray,
    data: SplitData,
    coords: np.ndarray,
    elements: list[frozenset[str]],
    composition: np.ndarray | None,
    composition_metric: str,
    hashes: list[set[str]] | None,
    cap: int,
    seed: int,
) -> dict[str, Any]:
    counts = data.frame_counts()
    card: dict[str, Any] = {"sizes": {}}
    for name, code in ROLES.items():
        mask = roles == code
        card["sizes"][name] = {"frames": int(counts[mask].sum()), "materials": int(mask.sum())}
    train, test = np.flatnonzero(roles == TRAIN), np.flatnonzero(roles == TEST)
    train_elements = frozenset().union(*(elements[i] for i in train)) if len(train) else frozenset()
    test_elements = frozenset().union(*(elements[i] for i in test)) if len(test) else frozenset()
    card["elements_only_in_test"] = sorted(test_elements - train_elements)
    card["test_materials_with_unseen_elements"] = int(sum(1 for i in test if elements[i] - train_elements))
    rng = np.random.default_rng(seed)
    q_test, sampled_test = _sample(test, cap, rng)
    q_train, sampled_train = _sample(train, cap, rng)
    d_test = _nearest(coords[train], coords[q_test])
    d_train = _nearest(coords[train], coords[q_train], exclude_self=True)
    radius = float(np.percentile(d_train, 95)) if len(d_train) and np.isfinite(d_train).any() else float("nan")
    outside = float(np.mean(d_test > radius)) if len(d_test) and np.isfinite(radius) else float("nan")
    card["kpca_distance"] = {
        "test_to_train_median": _round(np.median(d_test)) if len(d_test) else None,
        "test_to_train_p95": _round(np.percentile(d_test, 95)) if len(d_test) else None,
        "test_to_train_min": _round(np.min(d_test)) if len(d_test) else None,
        "train_domain_radius_p95": _round(radius),
        "fraction_test_outside_domain": _round(outside, 4),
        "sampled": sampled_test or sampled_train,
    }
    if composition is not None and len(train) and len(test):
        d_comp = _nearest(composition[train], composition[q_test], metric=composition_metric)
        card["_composition_min_distance_exact"] = float(np.min(d_comp))  # compared; popped by build_card
        card["composition_min_distance"] = _round(np.min(d_comp))  # display only
    if hashes is not None:
        train_hashes = set().union(*(hashes[i] for i in train)) if len(train) else set()
        card["test_structures_identical_to_train"] = int(sum(1 for i in test if hashes[i] & train_hashes))
    return card


def build_card(
    dataset: str,
    data: SplitData,
    run: SplitRun,
    params: dict[str, Any],
    composition: np.ndarray | None = None,
    composition_metric: str = "manhattan",
    dedup_metrics: dict[str, Any] | None = None,
    input_counts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The card as a JSON-able dict (floats rounded to 6 significant digits)."""
    card_params = params.get("card") or {}
    flag_below = float(card_params.get("in_domain_flag", 0.5))
    cap = int(card_params.get("max_rows", 20000) or 0)
    seed = int(params.get("seed", 0))
    elements = data.material_elements()
    hashes = None
    if "structure_hash" in data.meta:
        hashes = [set() for _ in range(data.n_materials)]
        for m, h in zip(data.material_of_frame, data.meta["structure_hash"]):
            hashes[m].add(h)
    threshold = dedup_thresholds(dedup_metrics)
    comp_threshold = composition_threshold(threshold)
    tolerance = dedup_epsilon(dedup_metrics) + storage_tolerance(composition, composition_metric)
    strategies: dict[str, Any] = {}
    for name, result in run.results.items():
        folds = {}
        for k, fold in enumerate(result.folds):
            entry = {"name": fold.name, **fold.notes}
            entry.update(fold_card(fold.roles, data, run.material_coords, elements, composition, composition_metric, hashes, cap, seed + k))
            flags = []
            outside = entry["kpca_distance"]["fraction_test_outside_domain"]
            if name == "loco" and outside is not None and outside < flag_below:
                flags.append(f"mostly_in_domain: only {outside:.0%} of test materials lie outside the training domain")
            if entry.get("test_structures_identical_to_train"):
                flags.append("identical structures in train and test")
            d_min = entry.pop("_composition_min_distance_exact", None)
            if comp_threshold is not None and d_min is not None and near_duplicate(d_min, comp_threshold, tolerance):
                flags.append(f"near-duplicate composition across the split: {d_min:.10g} <= dedup threshold {comp_threshold:g} (+ {tolerance:.2g})")
            entry["flags"] = flags
            folds[str(k)] = entry
        strategies[name] = {"info": _jsonable(result.info), "n_folds": len(result.folds), "folds": folds}
    return {
        "dataset": dataset,
        "input": input_counts or {},
        "seed": seed,
        "distance_space": "material-level mean kernel-PCA coordinates of standardised SOAP (see embedding)",
        "embedding": {k: (_round(v) if isinstance(v, float) else v) for k, v in run.embedding.items()},
        "domain_rule": "outside = nearest-train distance > p95 of train-to-nearest-other-train distances",
        "in_domain_flag": flag_below,
        "leakage": {
            "composition_metric": composition_metric if composition is not None else None,
            "dedup_threshold": threshold,
            "tolerance": tolerance,
            "rule": "near-duplicate iff the unrounded test-train composition distance <= dedup threshold + tolerance "
            "(dedup's epsilon, plus the float32 rounding bound of the stored composition vectors when they are float32)",
            "note": None if composition is not None else "no composition vectors in features.parquet",
        },
        "strategies": strategies,
    }


def dedup_thresholds(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """Every threshold-like entry of metrics/<name>/dedup.json (flattened `a.b` keys)."""
    found: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif "threshold" in prefix.lower() and isinstance(value, (int, float, str)) and not isinstance(value, bool):
            found[prefix] = value

    walk(metrics or {}, "")
    return found


# = xtalbench.dedup.stage.DEFAULT_EPSILON (not imported: the split stage does not depend on dedup's
# code, only on its metrics, which carry the epsilon used; tests check the two agree)
DEFAULT_EPSILON = 1e-9


def near_duplicate(distance: float, threshold: float, tolerance: float) -> bool:
    """The dedup rule (`xtalbench.dedup.stage.greedy_select`): distance <= threshold + tolerance, unrounded."""
    return bool(distance <= threshold + tolerance)


def dedup_epsilon(metrics: dict[str, Any] | None) -> float:
    """The composition level's `epsilon` in metrics/<name>/dedup.json (dedup's default if absent)."""
    level = ((metrics or {}).get("levels") or {}).get("composition") or {}
    value = level.get("epsilon", DEFAULT_EPSILON)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else DEFAULT_EPSILON


def storage_tolerance(vectors: np.ndarray | None, metric: str) -> float:
    """Bound on the distance error from storing `vectors` as float32 (0 if they hold float64 values).

    Rounding each component to float32 moves it by at most u·|x| (u = 2^-24), so a Manhattan
    distance moves by at most 2·D·u·max|x| and a Euclidean one by 2·√D·u·max|x|; dedup decides
    on float64 vectors, so the card must not call a pair dedup kept a near-duplicate on that noise.
    """
    if vectors is None or not len(vectors):
        return 0.0
    vectors = np.asarray(vectors)
    if vectors.dtype == np.float64 and not np.array_equal(vectors.astype(np.float32).astype(np.float64), vectors):
        return 0.0
    d = vectors.shape[1]
    scale = float(np.max(np.abs(vectors))) if vectors.size else 0.0
    u = float(np.finfo(np.float32).eps) / 2
    return 2 * (d if metric in ("manhattan", "cityblock") else np.sqrt(d)) * u * scale


def composition_threshold(found: dict[str, Any]) -> float | None:
    """The composition-level dedup threshold (the space `composition_min_distance` is measured in)."""
    for key in sorted(found):
        if isinstance(found[key], (int, float)) and ("composition" in key.lower() or key.lower().endswith("threshold")):
            if "structure" not in key.lower():
                return float(found[key])
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return _round(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value


def render_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown: one table per strategy."""
    lines = [f"# Split card: {card['dataset']}", ""]
    emb = card["embedding"]
    lines += [
        f"Distances: {card['distance_space']}; {emb.get('method')}, gamma {emb.get('gamma')} ({emb.get('gamma_rule')}), "
        f"{emb.get('n_components')} components.",
        f"Out of domain: {card['domain_rule']}. LOCO folds with less than {card['in_domain_flag']:.0%} of test materials "
        "outside the domain are flagged.",
        f"Leakage: composition metric {card['leakage']['composition_metric']}, dedup threshold {card['leakage']['dedup_threshold'] or 'n/a'}.",
        "",
    ]
    for name, block in card["strategies"].items():
        lines += [f"## {name}", ""]
        info = block["info"]
        if info.get("skipped") and isinstance(info["skipped"], str):
            lines += [f"Skipped: {info['skipped']}", ""]
            continue
        if name == "loco":
            lines.append(f"Cluster sizes (frames): {info.get('cluster_sizes')}; merged: {info.get('merged') or 'none'}")
        if isinstance(info.get("skipped"), dict) and info["skipped"]:
            lines.append(f"Skipped folds: {info['skipped']}")
        lines += [
            "",
            "| fold | name | train | val | test | unseen elements | test→train median | p95 | min | outside domain | min comp. dist. | flags |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for k, f in block["folds"].items():
            s, d = f["sizes"], f["kpca_distance"]
            lines.append(
                f"| {k} | {f['name']} | {s['train']['frames']} | {s['val']['frames']} | {s['test']['frames']} | "
                f"{', '.join(f['elements_only_in_test']) or '-'} | {d['test_to_train_median']} | {d['test_to_train_p95']} | "
                f"{d['test_to_train_min']} | {d['fraction_test_outside_domain']} | {f.get('composition_min_distance', '-')} | "
                f"{'; '.join(f['flags']) or '-'} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"
