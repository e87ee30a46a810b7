"""Configs: base inheritance, strict overrides, path resolvers, the resolved copy saved beside outputs."""

from __future__ import annotations

import pytest
import yaml

from moco_bench.config import load_config, resolved, save_config
from moco_bench.errors import ConfigError


@pytest.fixture
def configs(tmp_path):
    (tmp_path / "base.yaml").write_text("version: 1\nname: base\nsvm:\n  costs: [1.0, 10.0]\n  folds: 3\n"
                                        "data:\n  root: ${datasets:VOC2007}\n")
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "child.yaml").write_text("base: ../base.yaml\nname: child\nsvm:\n  folds: 2\n"
                                                  "data:\n  root: ${embedded:minivoc}\n")
    return tmp_path


def test_base_inheritance_and_resolvers(configs, monkeypatch):
    monkeypatch.setenv("MOCO_BENCH_DATASETS", "/data")
    monkeypatch.setenv("MOCO_BENCH_DATA", "/cache")
    base = resolved(load_config(configs / "base.yaml"))
    assert base["data"]["root"] == "/data/VOC2007"
    child = resolved(load_config(configs / "demo" / "child.yaml"))
    assert child["name"] == "child" and child["svm"] == {"costs": [1.0, 10.0], "folds": 2}
    assert child["data"]["root"] == "/cache/embedded/minivoc"


def test_overrides(configs):
    cfg = load_config(configs / "base.yaml", ["svm.folds=5", "svm.costs=[0.5]"])
    assert cfg.svm.folds == 5 and list(cfg.svm.costs) == [0.5]


def test_unknown_key_is_an_error(configs):
    with pytest.raises(ConfigError, match=r"base.yaml: no config key 'svm.fold'"):
        load_config(configs / "base.yaml", ["svm.fold=5"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(configs / "base.yaml", ["svm.folds"])
    (configs / "typo.yaml").write_text("base: base.yaml\nsvm:\n  fold: 2\n")
    with pytest.raises(ConfigError, match="typo.yaml: sets a key its base base.yaml does not have"):
        load_config(configs / "typo.yaml")
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(configs / "missing.yaml")
    (configs / "broken.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml: not a valid YAML config"):
        load_config(configs / "broken.yaml")


def test_save_config_is_resolved(configs, tmp_path, monkeypatch):
    monkeypatch.setenv("MOCO_BENCH_DATASETS", "/data")
    out = tmp_path / "out" / "config.yaml"
    save_config(load_config(configs / "base.yaml", ["name=x"]), out)
    saved = yaml.safe_load(out.read_text())
    assert saved["name"] == "x" and saved["data"]["root"] == "/data/VOC2007"
