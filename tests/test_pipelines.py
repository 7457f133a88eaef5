"""pipelines/mptrj and pipelines/mp-api: DVC parses them, every command and param resolves."""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from xtalbench import cli

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ["mptrj", "mp-api"]


def load(name: str) -> tuple[dict, dict]:
    folder = ROOT / "pipelines" / name
    return yaml.safe_load((folder / "dvc.yaml").read_text()), yaml.safe_load((folder / "params.yaml").read_text())


def lookup(params: dict, dotted: str):
    value = params
    for part in dotted.split("."):
        assert isinstance(value, dict) and part in value, f"params key {dotted!r} is missing"
        value = value[part]
    return value


def expand(stage: dict, params: dict) -> list[dict]:
    """Instances of a foreach/matrix stage with ${key}/${item...} filled in (enough for these files)."""
    def fill(obj, subs):
        text = yaml.safe_dump(obj)
        for k, v in subs.items():
            text = text.replace("${" + k + "}", v)
        return yaml.safe_load(text)

    if "foreach" in stage:
        items = lookup(params, stage["foreach"].strip("${}"))
        return [fill(stage["do"], {"key": key}) for key in items]
    if "matrix" in stage:
        axes = {k: lookup(params, v.strip("${}")) for k, v in stage["matrix"].items()}
        body = {k: v for k, v in stage.items() if k != "matrix"}
        out = [{}]
        for axis, values in axes.items():
            out = [{**combo, axis: v} for combo in out for v in values]
        return [fill(body, {f"item.{k}": str(v) for k, v in combo.items()}) for combo in out]
    return [stage]


@pytest.mark.parametrize("name", PIPELINES)
def test_commands_parse_with_the_pipeline_params(name):
    dvc, params = load(name)
    expected = {"fetch", "dedup", "featurize", "split", "evaluate"}
    assert set(dvc["stages"]) == expected
    params_file = f"pipelines/{name}/params.yaml"
    for stage_name, stage in dvc["stages"].items():
        for instance in expand(stage, params):
            assert instance["wdir"] == "../.."  # runs in the repository root
            argv = shlex.split(instance["cmd"])
            assert argv[0] == "xtalbench" and argv[1] == stage_name and argv[1] in cli.COMMANDS
            assert argv[argv.index("--params") + 1] == params_file and (ROOT / params_file).exists()
            # the command's own parser accepts the arguments
            parser, commands = cli.build_parser()
            importlib.import_module(cli.MODULES[argv[1]]).add_arguments(commands[argv[1]])
            args = parser.parse_args(argv[1:])
            assert args.params == params_file
            if hasattr(args, "dataset"):
                assert args.dataset in params["datasets"]
            if hasattr(args, "model"):
                assert (ROOT / "models" / f"{args.model}.yaml").exists()
            # every tracked param exists in this pipeline's params file
            for entry in instance.get("params", []):
                assert isinstance(entry, dict) and list(entry) == [params_file]
                for key in entry[params_file]:
                    lookup(params, key)
            # code deps exist; data deps are outs of an earlier stage
            for dep in instance.get("deps", []):
                if dep.startswith(("src/", "models/")):
                    assert (ROOT / dep).exists(), dep
                else:
                    assert re.match(r"(datasets|splits)/[\w.-]+(/[\w.-]+)?$", dep), dep


@pytest.mark.parametrize("name", PIPELINES)
def test_dataset_configs_are_accepted_by_their_sources(name):
    _, params = load(name)
    for dataset, config in params["datasets"].items():
        if config["source"] == "mptrj":
            from xtalbench.fetch.sources import mptrj

            mptrj._check_config(config)
            assert config["url"] == "https://figshare.com/ndownloader/files/41619375"
            assert re.fullmatch(r"[0-9a-f]{32}", config["md5"])
            assert mptrj.describe(config)["md5"] == config["md5"]
        elif config["source"] == "mp-api":
            from xtalbench.fetch.sources.mp_api import Query

            query = Query.from_config(config)
            assert query.query["num_sites"] == (1, 40) and query.query["energy_above_hull"] == (0, 0.1)
            assert set(query.query["elements"]) == {"Li", "O"} and query.sort == "material_id"
        else:
            pytest.fail(f"{name}: unexpected source {config['source']!r}")
    assert params["compute"]["executor"] == "dask"
    from xtalbench.core.parallel import compute_options

    compute_options(params)  # validates the block
    assert params["evaluate"]["device"] == "auto"
    assert set(params["evaluate"]["models"]) == {"mace-mp-small", "mace-mp-medium"}
    assert set(params["split"]["strategies"]) == {"loco", "random"}


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_dvc_parses_all_pipelines(tmp_path):
    """In a throwaway git+DVC copy: DVC lists every stage and resolves outs at the repository root."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for item in ("dvc.yaml", "params.yaml", "pipelines", "models", "src"):
        source = ROOT / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, repo / item)
    env = {"DVC_NO_ANALYTICS": "1", "PATH": str(Path(shutil.which("git")).parent)}
    dvc = str(ROOT / ".venv" / "bin" / "dvc") if (ROOT / ".venv" / "bin" / "dvc").exists() else shutil.which("dvc")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
    subprocess.run([dvc, "init", "-q"], cwd=repo, check=True, env=env)
    subprocess.run([dvc, "config", "core.site_cache_dir", str(tmp_path / "site")], cwd=repo, check=True, env=env)
    listed = subprocess.run([dvc, "stage", "list", "--all", "--name-only"], cwd=repo, check=True, env=env, capture_output=True, text=True).stdout.split()
    for name in PIPELINES:
        dvc_yaml, params = load(name)
        for dataset in params["datasets"]:
            for stage in ("fetch", "dedup", "featurize", "split"):
                assert f"pipelines/{name}/dvc.yaml:{stage}@{dataset}" in listed
            for model in params["evaluate"]["models"]:
                assert f"pipelines/{name}/dvc.yaml:evaluate@{dataset}-{model}" in listed
    # outputs land in the repository root, linked: dedup depends on fetch's frames
    dag = subprocess.run([dvc, "dag", "--dot", "pipelines/mptrj/dvc.yaml:featurize@mptrj"], cwd=repo, check=True, env=env, capture_output=True, text=True).stdout
    assert "fetch@mptrj" in dag and "dedup@mptrj" in dag
    status = subprocess.run([dvc, "status", "pipelines/mptrj/dvc.yaml:dedup@mptrj"], cwd=repo, env=env, capture_output=True, text=True).stdout
    assert "datasets/mptrj/frames.parquet" in status and "pipelines/mptrj/params.yaml" in status
