"""benchmarks/bench_scale.py on a small table: every stage runs on the real code, and the synthetic
MPtrj JSON round-trips through the real `mptrj` fetch unchanged. (Timings are not asserted.)"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "benchmarks" / "bench_scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_scale"] = module
    spec.loader.exec_module(module)
    return module


def test_every_stage_runs_and_fetch_round_trips(tmp_path, monkeypatch):
    bench = load_bench()
    throughputs = tmp_path / "throughputs.json"
    throughputs.write_text((ROOT / "benchmarks" / "throughputs.json").read_text())
    monkeypatch.setattr(bench, "THROUGHPUTS", throughputs)
    work = tmp_path / "work"
    rows = 1200
    assert bench.main(["--rows", str(rows), "--evaluate-rows", "600,1200", "--score-rows", "600,1200",
                       "--dedup-level", "composition", "--workdir", str(work), "--write"]) == 0

    results = json.loads((work / "results.json").read_text())["results"]
    for stage in ("generate", "fetch", "dedup", "featurize", "split", "evaluate", "score"):
        assert results[stage]["rows"] == rows, stage
        assert results[stage]["peak_mb"] > results["baseline"]["peak_mb"] * 0.5
    assert results["fetch"]["kept"] == rows  # every generated frame is valid
    assert results["evaluate"]["predicted"] + results["evaluate"]["skipped"] == rows
    assert results["evaluate"]["predicted"] >= rows * 0.1 * 0.9
    assert results["split"]["strategies"] == ["loco", "random"]  # the MPtrj pipeline's strategies
    assert sum(results["split"]["loco_clusters"]) == rows

    # the MPtrj JSON writer and the real parser agree: stress survives kBar (VASP sign) and back
    generated = pq.read_table(work / "frames.parquet").slice(0, rows).to_pydict()
    fetched = pq.read_table(work / "datasets" / "bench" / "frames.parquet").to_pydict()
    by_id = {fid: i for i, fid in enumerate(fetched["frame_id"])}
    for k in range(0, rows, 97):
        j = by_id[generated["frame_id"][k]]
        assert fetched["material_id"][j] == generated["material_id"][k]
        np.testing.assert_allclose(fetched["stress"][j], generated["stress"][k], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(fetched["forces"][j], generated["forces"][k])
        np.testing.assert_allclose(fetched["positions"][j], generated["positions"][k], atol=1e-9)
        assert fetched["energy"][j] == generated["energy"][k]

    recorded = json.loads(throughputs.read_text())["stages"]
    assert recorded["featurize"]["by_soap"]["4x3"]["rate_per_s"] > 0  # pipelines/mptrj featurize: n_max 4, l_max 3
    assert recorded["split"]["memory"]["mb_per_row"] >= 0
    assert "dedup-level composition" not in recorded["dedup"]["source"]  # an overridden level is not recorded
