"""Configs: base inheritance, strict overrides, path resolvers, the resolved copy saved beside outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List

import pytest
import yaml

from moco_bench.core.config import load_config, resolved, save_config
from moco_bench.core.errors import ConfigError
from moco_bench.core.schema import MISSING, field


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


@dataclass
class _Svm:
    costs: List[float] = field(min=1e-9, each=True)
    folds: int = field(min=2)


@dataclass
class _Schema:
    _source_: str = ""
    version: int = MISSING
    name: str = MISSING
    svm: _Svm = MISSING
    data: Dict[str, Any] = field({})


def test_unknown_key_is_an_error(configs):
    with pytest.raises(ConfigError, match=r"base.yaml: override of 'svm.fold' refused"):
        load_config(configs / "base.yaml", ["svm.fold=5"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(configs / "base.yaml", ["svm.folds"])
    (configs / "typo.yaml").write_text("base: base.yaml\nsvm:\n  fold: 2\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: svm.fold: Key 'fold' not in '_Svm'"):
        load_config(configs / "typo.yaml", schema=_Schema)
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(configs / "missing.yaml")
    (configs / "broken.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml: not a valid YAML config"):
        load_config(configs / "broken.yaml")


def test_schema_ranges_types_versions_and_children_that_add_blocks(configs):
    cfg = load_config(configs / "base.yaml", schema=_Schema)
    assert cfg.svm.folds == 3 and cfg.data.root.endswith("VOC2007")
    with pytest.raises(ConfigError, match=r"svm.folds: 1 is below its minimum 2"):
        load_config(configs / "base.yaml", ["svm.folds=1"], schema=_Schema)
    with pytest.raises(ConfigError, match=r"svm.costs: -1.0 is below its minimum"):
        load_config(configs / "base.yaml", ["svm.costs=[1.0,-1.0]"], schema=_Schema)
    with pytest.raises(ConfigError, match="override of 'svm.folds' refused: Value 'many'"):
        load_config(configs / "base.yaml", ["svm.folds=many"], schema=_Schema)
    (configs / "old.yaml").write_text("version: 0\nname: old\n")
    with pytest.raises(ConfigError, match="old.yaml: config format version 0; this moco-bench reads version 1"):
        load_config(configs / "old.yaml")
    (configs / "short.yaml").write_text("version: 1\nname: short\n")
    with pytest.raises(ConfigError, match=r"short.yaml: required key\(s\) not set: svm"):
        load_config(configs / "short.yaml", schema=_Schema)
    (configs / "adds.yaml").write_text("base: base.yaml\nname: adds\nextra:\n  k: [1, 2]\n")
    assert list(load_config(configs / "adds.yaml").extra.k) == [1, 2]  # a child may add a block of its own


def test_save_config_is_resolved(configs, tmp_path, monkeypatch):
    monkeypatch.setenv("MOCO_BENCH_DATASETS", "/data")
    out = tmp_path / "out" / "config.yaml"
    save_config(load_config(configs / "base.yaml", ["name=x"]), out)
    saved = yaml.safe_load(out.read_text())
    assert saved["name"] == "x" and saved["data"]["root"] == "/data/VOC2007"
