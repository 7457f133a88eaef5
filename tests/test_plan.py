"""`xtalbench plan`: arithmetic of the estimate, the real pipelines, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from xtalbench import cli
from xtalbench.tools.plan import (
    PlanError,
    dask_workers,
    estimate,
    format_plan,
    load_throughputs,
    soap_size,
)

ROOT = Path(__file__).resolve().parents[1]


def throughputs() -> dict:
    return {
        "assumptions": {"gpu_speedup": {"evaluate": 8, "default": 1}, "dedup_keep_fraction": 0.5},
        "known_sizes": {},
        "stages": {
            "fetch": {"input": "frames", "rate_per_s": 400.0, "peak_mb": 300, "source": "test"},
            "dedup": {"input": "frames", "rate_per_s": 100.0, "peak_mb": 1, "memory": {"base_mb": 200, "mb_per_row": 0.01}, "source": "test"},
            "featurize": {"input": "kept", "rate_per_s": 250.0, "peak_mb": 600, "parallel": True, "source": "test"},
            "split": {"input": "kept", "rate_per_s": 1000.0, "fixed_seconds": 30.0, "peak_mb": 900, "source": "test"},
            "evaluate": {"input": "kept", "parallel": True, "gpu": True, "models_param": "evaluate.models",
                         "models": {"a": {"rate_per_s": 10.0, "peak_mb": 2000, "source": "test"}, "b": {"rate_per_s": 2.0, "peak_mb": 3000, "source": "test"}}},
        },
    }


def make_pipeline(tmp_path: Path, stages=("fetch", "dedup", "featurize", "split", "evaluate"), rows=10_000, executor="local", workers=2, device="cpu", models=("a", "b")) -> Path:
    folder = tmp_path / "pipe"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dvc.yaml").write_text(yaml.safe_dump({"stages": {s: {"cmd": f"xtalbench {s} d"} for s in stages}}))
    params = {
        "datasets": {"d": {"source": "mptrj", "url": "u", "md5": "m"}},
        "plan": {"expected_rows": {"d": rows}},
        "compute": {"executor": executor, "n_workers": workers},
        "evaluate": {"models": list(models), "device": device},
    }
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return folder


def by_stage(plan):
    return {s.stage: s for s in plan.stages}


def test_doubling_rows_doubles_linear_stages(tmp_path):
    small = by_stage(estimate(make_pipeline(tmp_path / "1", rows=10_000), throughputs()))
    large = by_stage(estimate(make_pipeline(tmp_path / "2", rows=20_000), throughputs()))
    for stage in ("fetch", "dedup", "featurize", "evaluate"):
        assert large[stage].seconds == pytest.approx(2 * small[stage].seconds)
    # split has a fixed part: doubling adds only the linear part
    assert large["split"].seconds - small["split"].seconds == pytest.approx(small["split"].seconds - 30.0)
    # streaming stages keep their peak; dedup's grows with rows (base + per row)
    assert large["featurize"].peak_mb == small["featurize"].peak_mb == 600
    assert large["dedup"].peak_mb - small["dedup"].peak_mb == pytest.approx(10_000 * 0.01)


def test_rates_and_keep_fraction(tmp_path):
    stages = by_stage(estimate(make_pipeline(tmp_path, rows=10_000), throughputs()))
    assert stages["fetch"].seconds == pytest.approx(10_000 / 400)
    assert stages["featurize"].rows == 5_000  # after dedup (keep fraction 0.5)
    assert stages["featurize"].seconds == pytest.approx(5_000 / 250)
    # evaluate: one pass per model, peak of the larger model
    assert stages["evaluate"].seconds == pytest.approx(5_000 / 10 + 5_000 / 2)
    assert stages["evaluate"].peak_mb == 3000


def test_dask_workers_and_gpu_assumption(tmp_path, monkeypatch):
    monkeypatch.setattr("xtalbench.tools.plan.os.cpu_count", lambda: 8)
    cpu = by_stage(estimate(make_pipeline(tmp_path / "1"), throughputs()))
    dask = by_stage(estimate(make_pipeline(tmp_path / "2", executor="dask", workers=4), throughputs()))
    gpu = estimate(make_pipeline(tmp_path / "3", device="cuda"), throughputs())
    assert dask["featurize"].seconds == pytest.approx(cpu["featurize"].seconds / 4)
    assert dask["evaluate"].seconds == pytest.approx(cpu["evaluate"].seconds / 4)
    assert dask["fetch"].seconds == pytest.approx(cpu["fetch"].seconds)  # not a parallel stage
    g = by_stage(gpu)
    assert g["evaluate"].seconds == pytest.approx(cpu["evaluate"].seconds / 8)
    assert g["featurize"].seconds == pytest.approx(cpu["featurize"].seconds)  # no GPU path
    assert gpu.device == "cuda" and any("ASSUMPTION" in note for note in g["evaluate"].notes)
    assert "ASSUMPTION" in format_plan(gpu)


def test_device_override_and_rows_override(tmp_path):
    folder = make_pipeline(tmp_path)
    base = by_stage(estimate(folder, throughputs(), rows=1_000))
    assert base["fetch"].rows == 1_000
    assert by_stage(estimate(folder, throughputs(), rows=1_000, device="cuda"))["evaluate"].seconds == pytest.approx(base["evaluate"].seconds / 8)


def test_unknown_stage_model_and_pipeline_are_clear_errors(tmp_path):
    with pytest.raises(PlanError, match=r"stage 'train' has no measured throughput.*known: dedup, evaluate"):
        estimate(make_pipeline(tmp_path / "1", stages=("fetch", "train")), throughputs())
    with pytest.raises(PlanError, match=r"model 'zzz' has no measured throughput"):
        estimate(make_pipeline(tmp_path / "2", models=("a", "zzz")), throughputs())
    with pytest.raises(PlanError, match="no pipeline at"):
        estimate(tmp_path / "nowhere", throughputs())
    folder = make_pipeline(tmp_path / "3")
    params = yaml.safe_load((folder / "params.yaml").read_text())
    del params["plan"]
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(PlanError, match=r"dataset 'd': size unknown; set `plan.expected_rows`"):
        estimate(folder, throughputs(), root=tmp_path)
    with pytest.raises(PlanError, match="does not exist"):
        load_throughputs(tmp_path / "none.json")


@pytest.mark.parametrize("pipeline", ["pipelines/mptrj", "pipelines/mp-api", "."])
def test_real_pipelines_with_recorded_throughputs(pipeline, monkeypatch):
    """Every stage of the shipped pipelines has a throughput; the numbers follow the file."""
    monkeypatch.chdir(ROOT)
    recorded = load_throughputs()
    plan = estimate(pipeline, recorded, device="cpu")
    dvc_stages = list(yaml.safe_load((ROOT / pipeline / "dvc.yaml").read_text())["stages"])
    assert [s.stage for s in plan.stages] == dvc_stages
    assert all(s.seconds > 0 and s.peak_mb > 0 for s in plan.stages)
    params = yaml.safe_load((ROOT / pipeline / "params.yaml").read_text())
    if "plan" in params:
        for name, n in params["plan"]["expected_rows"].items():
            assert plan.datasets[name] == n
        stages = by_stage(plan)
        keep = params["plan"]["dedup_keep_fraction"]
        kept = round(sum(plan.datasets.values()) * keep)
        featurize = recorded["stages"]["featurize"]
        rate = (featurize.get("by_soap") or {}).get(soap_size(params), featurize)["rate_per_s"]
        workers = dask_workers(params["compute"])[0]  # LocalCluster: at most this machine's cores
        assert stages["featurize"].seconds == pytest.approx(kept / rate / workers)
        models = recorded["stages"]["evaluate"]["models"]
        # a rate measured with several threads already used this machine's cores: a LocalCluster does not divide it again
        expected = sum(kept / models[m]["rate_per_s"] / max(1, workers // models[m].get("threads", 1)) for m in params["evaluate"]["models"])
        assert stages["evaluate"].seconds == pytest.approx(expected)


def test_cli_prints_table_and_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(["plan", "pipelines/mptrj", "--device", "cuda"]) == 0
    out = capsys.readouterr().out
    for stage in ("fetch", "dedup", "featurize", "split", "evaluate", "total"):
        assert any(line.startswith(stage) for line in out.splitlines())
    assert "1,580,395" in out and "GPU speed-up (ASSUMPTION" in out
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps(throughputs()))
    with pytest.raises(SystemExit, match="xtalbench plan: stage 'train' has no measured throughput"):
        cli.main(["plan", ".", "--rows", "1000", "--throughputs", str(bad)])  # --rows: no frames.parquet needed


def test_featurize_rate_follows_the_soap_size(tmp_path):
    data = throughputs()
    data["stages"]["featurize"]["by_soap"] = {"4x3": {"rate_per_s": 1000.0, "peak_mb": 700, "source": "small soap"}}
    folder = make_pipeline(tmp_path)
    default = by_stage(estimate(folder, data))["featurize"]
    assert default.seconds == pytest.approx(5_000 / 250)  # 8x6 (the default size) has no variant: the stage rate
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["featurize"] = {"soap": {"n_max": 4, "l_max": 3}}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    small = by_stage(estimate(folder, data))["featurize"]
    assert small.seconds == pytest.approx(5_000 / 1000)
    assert small.peak_mb == 700 and "small soap" in small.notes[0]


def test_local_cluster_workers_capped_at_the_cores(tmp_path, monkeypatch):
    monkeypatch.setattr("xtalbench.tools.plan.os.cpu_count", lambda: 2)
    local = estimate(make_pipeline(tmp_path / "1", executor="local"), throughputs())
    capped = estimate(make_pipeline(tmp_path / "2", executor="dask", workers=4), throughputs())
    assert by_stage(capped)["featurize"].seconds == pytest.approx(by_stage(local)["featurize"].seconds / 2)
    assert any("n_workers 4 but a LocalCluster here has 2 cores" in n for n in capped.notes)
    remote = make_pipeline(tmp_path / "3", executor="dask", workers=4)
    params = yaml.safe_load((remote / "params.yaml").read_text())
    params["compute"]["scheduler_address"] = "tcp://cluster:8786"  # an existing cluster: its workers count
    (remote / "params.yaml").write_text(yaml.safe_dump(params))
    assert by_stage(estimate(remote, throughputs()))["featurize"].seconds == pytest.approx(by_stage(local)["featurize"].seconds / 4)


def test_rate_measured_on_all_cores_is_not_divided_again_on_a_local_cluster(tmp_path, monkeypatch):
    monkeypatch.setattr("xtalbench.tools.plan.os.cpu_count", lambda: 2)
    data = throughputs()
    data["stages"]["evaluate"]["models"]["a"]["threads"] = 2  # e.g. torch inference timed with both cores
    one = by_stage(estimate(make_pipeline(tmp_path / "1", models=("a",)), data))["evaluate"]
    two = by_stage(estimate(make_pipeline(tmp_path / "2", models=("a",), executor="dask", workers=2), data))["evaluate"]
    assert two.seconds == pytest.approx(one.seconds) == pytest.approx(5_000 / 10)
    assert any("measured with 2 threads" in n for n in two.notes)
    single = by_stage(estimate(make_pipeline(tmp_path / "3", executor="dask", workers=2), throughputs()))["featurize"]
    assert single.seconds == pytest.approx(5_000 / 250 / 2)  # single-threaded rates still scale with workers
