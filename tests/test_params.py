"""Validated params: every bad value ends in exit 2 and a message naming the key, the value and
what is allowed (no traceback, nothing written); the three pipelines' params files validate."""

from __future__ import annotations

import copy
import inspect
from pathlib import Path

import pytest
import yaml

from xtalbench.cli import main
from xtalbench.core.errors import ParamsError
from xtalbench.core.params import SECTIONS, read_params, validate_all

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_PARAMS = ["params.yaml", "pipelines/mptrj/params.yaml", "pipelines/mp-api/params.yaml"]
BASE = yaml.safe_load((ROOT / "params.yaml").read_text())


def run_cli(tmp_path: Path, monkeypatch, capsys, params: dict | str, *argv: str) -> tuple[int, str]:
    """`xtalbench <argv> --params <tmp file>` from an empty folder: (exit code, stderr)."""
    monkeypatch.chdir(tmp_path)
    file = tmp_path / "bad-params.yaml"
    file.write_text(params if isinstance(params, str) else yaml.safe_dump(params, sort_keys=False))
    code = main([*argv, "--params", str(file)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def edited(**changes) -> dict:
    """The root params with `changes` ({"a.b.c": value}; value DELETE removes the key)."""
    params = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = params
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return params


DELETE = object()
LOCAL = {"source": "local", "path": "structures"}

# (argv, params changes, fragments every one of which the message must contain)
CASES = {
    "typo limt": (["fetch", "mp20"], {"datasets.mp20.limt": 3}, ["datasets.mp20.limt: unknown key", "did you mean 'limit'", "allowed:"]),
    "typo enrgy_key": (["fetch", "mine"], {"datasets.mine": {**LOCAL, "enrgy_key": "E"}}, ["datasets.mine.enrgy_key: unknown key", "'energy_key'"]),
    "typo treshold": (["dedup", "mp20"], {"dedup.treshold": 0.1}, ["dedup.treshold: unknown key", "'threshold'"]),
    "threshold abc": (["dedup", "mp20"], {"dedup.threshold.structure": "abc"}, ["dedup.threshold.structure = 'abc'", "valid number"]),
    "quoted number": (["dedup", "mp20"], {"dedup.threshold": "0.1"}, ["dedup.threshold = '0.1'", "valid number"]),
    "threshold negative": (["dedup", "mp20"], {"dedup.threshold.composition": -0.2}, ["dedup.threshold.composition = -0.2", "greater than or equal to 0"]),
    "override typo": (["dedup", "mp-frames"], {"dedup.overrides.mp-frames.threshold": {"strucure": 0.05}},
                      ["dedup.overrides.mp-frames.threshold.strucure: unknown key", "'structure'"]),
    "override unknown dataset": (["dedup", "mp20"], {"dedup.overrides.mp-frame": {"level": "structure"}},
                                 ["dedup.overrides = 'mp-frame'", "not a dataset of `datasets`", "mp20, mp-frames"]),
    "dedup level": (["dedup", "mp20"], {"dedup.level": "all"}, ["dedup.level = 'all'", "'composition', 'structure' or 'both'"]),
    "dedup missing metric": (["dedup", "mp20"], {"dedup.metric": DELETE}, ["dedup.metric: required key is missing"]),
    "limit -3": (["fetch", "mp20"], {"datasets.mp20.limit": -3}, ["datasets.mp20.limit = -3", "greater than or equal to 1"]),
    "limit 0": (["fetch", "mp20"], {"datasets.mp20.limit": 0}, ["datasets.mp20.limit = 0", "greater than or equal to 1"]),
    "format cfi": (["fetch", "mine"], {"datasets.mine": {**LOCAL, "format": "cfi"}}, ["datasets.mine.format = 'cfi'", "'cif'", "'extxyz'"]),
    "unknown source": (["fetch", "mine"], {"datasets.mine": {**LOCAL, "source": "ftp"}},
                       ["datasets.mine.source = 'ftp'", "not one of shared, local, mp-api, mptrj"]),
    "missing source": (["fetch", "mine"], {"datasets.mine": {"path": "structures"}},
                       ["datasets.mine.source: required key is missing", "shared, local, mp-api, mptrj"]),
    "local without path": (["fetch", "mine"], {"datasets.mine": {"source": "local"}}, ["datasets.mine.path: required key is missing"]),
    "shared has no format": (["fetch", "mp20"], {"datasets.mp20.format": "cif"}, ["datasets.mp20.format: unknown key"]),
    "stress unit": (["fetch", "mine"], {"datasets.mine": {**LOCAL, "stress_unit": "kbar"}}, ["datasets.mine.stress_unit = 'kbar'", "'kbar_vasp'"]),
    "mp-api page": (["fetch", "mine"], {"datasets.mine": {"source": "mp-api", "chunk_size": 5000}},
                    ["datasets.mine.chunk_size = 5000", "less than or equal to 1000"]),
    "mp-api retry typo": (["fetch", "mine"], {"datasets.mine": {"source": "mp-api", "retry": {"retries": 3}}},
                          ["datasets.mine.retry.retries: unknown key", "max_retries"]),
    "mptrj unpinned": (["fetch", "mine"], {"datasets.mine": {"source": "mptrj", "url": "https://example.org/MPtrj.json"}},
                       ["datasets.mine", "`url` with its `md5`"]),
    "mptrj md5": (["fetch", "mine"], {"datasets.mine": {"source": "mptrj", "path": "m.json", "md5": "xyz"}}, ["datasets.mine.md5 = 'xyz'", "pattern"]),
    "unknown section splt": (["split", "mp20"], {"splt": {"seed": 1}}, ["unknown section 'splt'", "did you mean 'split'", "known sections:"]),
    "test_fraction 1.5": (["split", "mp20"], {"split.random.test_fraction": 1.5}, ["split.random.test_fraction = 1.5", "less than 1"]),
    "test_fraction 1": (["split", "mp20"], {"split.random.test_fraction": 1.0}, ["split.random.test_fraction = 1.0", "less than 1"]),
    "val_fraction 1 leaves no train": (["split", "mp20"], {"split.loco.val_fraction": 1.0}, ["split.loco.val_fraction = 1.0", "less than 1"]),
    "one cluster": (["split", "mp20"], {"split.loco.k": 1}, ["split.loco.k = 1", "greater than or equal to 2"]),
    "strategy typo": (["split", "mp20"], {"split.strategies": ["loco", "randm"]}, ["split.strategies.1 = 'randm'", "'random'"]),
    "element symbol": (["split", "mp20"], {"split.element.elements": ["Li", "Xx"]}, ["split.element.elements", "not chemical element symbols: ['Xx']"]),
    "featurize composition": (["featurize", "mp20"], {"featurize.composition": "elmd_petti"}, ["featurize.composition = 'elmd_petti'", "'elmd_mod_petti'"]),
    "soap typo": (["featurize", "mp20"], {"featurize.soap.nmax": 8}, ["featurize.soap.nmax: unknown key", "'n_max'"]),
    "compute executor": (["featurize", "mp20"], {"compute.executor": "spark"}, ["compute.executor = 'spark'", "'local' or 'dask'"]),
    "compute workers": (["featurize", "mp20"], {"compute.n_workers": 0}, ["compute.n_workers = 0", "greater than or equal to 1"]),
    "train fold": (["train", "mp20"], {"train.folds": [{"strategy": "loko", "fold": 0}]}, ["train.folds.0.strategy = 'loko'", "'loco'"]),
    "train dataset": (["train", "mp20"], {"train.datasets": ["mp21"]}, ["train.datasets = 'mp21'", "not a dataset of `datasets`"]),
    "evaluate device": (["evaluate", "mp20", "chgnet"], {"evaluate.device": "gpu"}, ["evaluate.device = 'gpu'", "pattern"]),
    "evaluate gap": (["evaluate", "mp20", "chgnet"], {"evaluate.gap_strategies": ["loco"]}, ["evaluate.gap_strategies = ['loco']", "at least 2"]),
    "report typo": (["report"], {"report.headline": ["f1"]}, ["report.headline: unknown key", "'headline_metrics'"]),
    "dataset ../../x": (["fetch", "../../x"], {"datasets:../../x": LOCAL}, ["'../../x' is not a valid dataset name"]),
    "dataset empty": (["fetch", ""], {"datasets:": LOCAL}, ["'' is not a valid dataset name"]),
    "dataset not configured": (["split", "mp30"], {}, ["dataset 'mp30' is not in `datasets`", "mp20, mp-frames"]),
}


def _changes(changes: dict) -> dict:
    """`edited`, except keys `datasets:<name>`: a dataset entry whose name holds dots or slashes."""
    params = edited(**{k: v for k, v in changes.items() if not k.startswith("datasets:")})
    for key, value in changes.items():
        if key.startswith("datasets:"):
            params["datasets"][key.removeprefix("datasets:")] = value
    return params


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_params_exit_2_naming_key_value_and_allowed(case, tmp_path, monkeypatch, capsys):
    argv, changes, fragments = CASES[case]
    code, err = run_cli(tmp_path, monkeypatch, capsys, _changes(changes), *argv)
    assert code == 2, err
    assert err.startswith(f"xtalbench {argv[0]}: error: "), err
    assert "bad-params.yaml" in err  # the file is named
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    assert [p.name for p in tmp_path.iterdir()] == ["bad-params.yaml"]  # nothing written
    assert not (tmp_path.parent.parent / "x").exists()


def test_broken_yaml_and_non_mapping_exit_2(tmp_path, monkeypatch, capsys):
    code, err = run_cli(tmp_path, monkeypatch, capsys, "datasets: {mp20: [unclosed\n", "fetch", "mp20")
    assert code == 2 and "not valid YAML" in err
    code, err = run_cli(tmp_path, monkeypatch, capsys, "- a\n- b\n", "fetch", "mp20")
    assert code == 2 and "the top level must be a mapping of sections, got list" in err


@pytest.mark.parametrize("file", PIPELINE_PARAMS)
def test_pipeline_params_files_validate(file):
    params = read_params(ROOT / file)
    parsed = validate_all(params, file)
    assert set(parsed) == {s for s in params if SECTIONS[s] is not None}
    assert {"datasets", "compute", "dedup", "featurize", "split", "train", "evaluate"} <= set(parsed)


def test_every_registered_section_has_a_loader():
    """Each registered parser imports (sections whose package is still being written aside)."""
    import importlib.util

    from xtalbench.core.params import section_loader

    for name, target in SECTIONS.items():
        module = None if target is None else target.split(":")[0]
        if module is not None and importlib.util.find_spec(module.rsplit(".", 1)[0]) and importlib.util.find_spec(module):
            assert callable(section_loader(name)), name


def test_sections_are_passed_on_as_written():
    """`as_config` keeps only the keys the file set, so each stage's own defaults still apply."""
    from xtalbench.dedup import params as dedup_params
    from xtalbench.dedup.stage import dataset_config
    from xtalbench.split import params as split_params

    section = dedup_params.load(BASE)
    for dataset in BASE["datasets"]:
        assert section.for_dataset(dataset).as_config() == dataset_config(BASE["dedup"], dataset)
    # mp-frames by hand: structure only, its structure threshold overridden, the rest inherited
    frames = section.for_dataset("mp-frames")
    assert frames.levels == ["structure"]
    assert (frames.threshold.composition, frames.threshold.structure) == (0.2, 0.05)
    assert frames.xrd.n_points == 901 and frames.metric.structure == "xrd"
    split = split_params.SplitParams.model_validate({"random": {"test_fraction": 0.2}})
    assert split.as_config() == {"random": {"test_fraction": 0.2}}
    assert (split.random.val_fraction, split.loco.k, split.element.min_test_materials) == (0.1, 5, 1)


def test_one_value_for_every_dedup_level():
    from xtalbench.dedup.params import DedupParams

    both = DedupParams.model_validate({"metric": {"composition": "magpie", "structure": "soap"}, "threshold": 0.3})
    assert (both.threshold.composition, both.threshold.structure) == (0.3, 0.3)
    with pytest.raises(ParamsError, match=r"dedup = .*metric\.structure is required with level 'both'"):
        from xtalbench.core.params import parse_value

        parse_value(DedupParams, {"metric": {"composition": "magpie"}, "threshold": 0.3}, "dedup")
    only = DedupParams.model_validate({"level": "composition", "metric": {"composition": "magpie"}, "threshold": {"composition": 0.3}})
    assert only.levels == ["composition"]


def _defaults(function) -> dict:
    return {k: p.default for k, p in inspect.signature(function).parameters.items() if p.default is not inspect.Parameter.empty}


def test_model_defaults_are_the_code_defaults():
    """Each model's defaults equal those of the code that reads the section."""
    from xtalbench.core.parallel import DEFAULT_COMPUTE
    from xtalbench.core.params import STRATEGY_NAMES, ComputeParams
    from xtalbench.dedup.params import DedupSoapParams, XrdParams
    from xtalbench.descriptors.soap import SoapFeaturizer
    from xtalbench.descriptors.xrd import XrdFeaturizer
    from xtalbench.featurize.params import SoapParams
    from xtalbench.fetch.params import RetryParams
    from xtalbench.fetch.sources.download import RetryPolicy
    from xtalbench.split import STRATEGIES
    from xtalbench.split.embedding import KernelMap
    from xtalbench.split.params import LocoParams

    assert ComputeParams().model_dump() == DEFAULT_COMPUTE
    soap = _defaults(SoapFeaturizer.__init__)
    assert SoapParams().model_dump() == {k: v for k, v in soap.items() if k != "species"}
    assert DedupSoapParams().model_dump() == {k: v for k, v in soap.items() if k not in ("species", "dtype")}
    xrd = _defaults(XrdFeaturizer.__init__)
    assert XrdParams().model_dump() == {k: v for k, v in xrd.items() if k not in ("dtype", "progress")}
    assert RetryParams().model_dump() == RetryPolicy().__dict__
    kmap = _defaults(KernelMap.__init__)
    assert {k: getattr(LocoParams(), k) for k in kmap if k != "random_state"} == {k: v for k, v in kmap.items() if k != "random_state"}
    assert STRATEGY_NAMES == tuple(STRATEGIES)
    from xtalbench.evaluate.params import EvaluateParams
    from xtalbench.evaluate.scoring import ScoringConfig

    scoring, evaluate = ScoringConfig(), EvaluateParams()
    for key in ("stability_threshold", "stability_tolerance", "n_bootstrap", "seed", "mp_references", "competing_phases",
                "hull_scheme_policy", "hull_max_disagreement", "force_cosine_min_norm", "plot_max_points"):
        assert getattr(evaluate, key) == getattr(scoring, key), key


def test_every_source_has_a_params_model_and_good_entries_parse():
    from xtalbench.fetch.params import SOURCE_PARAMS, LocalParams, parse_dataset
    from xtalbench.fetch.sources import SOURCES

    assert set(SOURCE_PARAMS) == set(SOURCES)
    entry = {"source": "local", "path": "runs", "format": "extxyz", "energy_key": "REF_energy", "forces_key": "REF_forces",
             "stress_unit": "GPa", "material_id_key": "mp_id", "frame_id_parts": ["step"], "meta_keys": ["config_type"], "limit": 10}
    parsed = parse_dataset("my-runs", entry)
    assert isinstance(parsed, LocalParams) and parsed.as_config() == entry
    assert parsed.material_id_key == "mp_id" and parsed.trajectory_id_key == "trajectory_id"  # the source's default
    assert parse_dataset("t", {"source": "mptrj", "path": "MPtrj.json"}).max_materials is None
    assert parse_dataset("q", {"source": "mp-api", "query": {"elements": ["Li", "O"]}, "chunk_size": 1000}).sort == "material_id"
