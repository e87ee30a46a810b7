"""Every shipped suite loads: each evaluation config exists, parses, names a registered evaluator, and
every override names a key the config has."""

from __future__ import annotations

from pathlib import Path

import pytest

from moco_bench.evaluators.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["paper", "quick", "demo"])
def test_shipped_suites_load(name):
    suite = load_suite(ROOT / "suites" / f"{name}.yaml")
    assert suite.name == name and len(suite.entries) >= 7
    for entry in suite.entries:
        assert entry.cfg.get("comparable", True) is (name == "paper"), entry.name
        if name == "quick":
            assert entry.cfg.variant == "quick"


def test_every_evaluate_config_loads():
    from moco_bench.config import load_config
    from moco_bench.evaluators.runner import check_config

    configs = sorted(p for p in (ROOT / "evaluate").rglob("*.yaml") if "detectron2" not in p.parts)
    assert len(configs) >= 25
    for path in configs:
        check_config(load_config(path))
