"""Where the zero-shot stage writes (one place, so the leaderboard reads without importing the stage)."""

from __future__ import annotations

from pathlib import Path


def output_paths(dataset: str, model: str, root: Path = Path(".")) -> dict[str, Path]:
    base = root / "datasets" / "zeroshot" / dataset
    return {
        "predictions": base / f"{model}.parquet",
        "skipped": base / f"{model}.skipped.parquet",
        "errors": base / f"{model}.errors.parquet",
        "metrics": root / "metrics" / "zeroshot" / "scores" / dataset / f"{model}.json",
    }
