"""Every shipped suite loads: each evaluation config exists, parses, names a registered evaluator, and
every override names a key the config has."""

from __future__ import annotations

from pathlib import Path

import pytest

from moco_bench.engine.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["paper", "quick", "demo"])
def test_shipped_suites_load(name):
    suite = load_suite(ROOT / "suites" / f"{name}.yaml")
    assert suite.name == name and len(suite.entries) >= 7
    from moco_bench.engine.runner import check_config

    for entry in suite.entries:
        assessment = check_config(entry.cfg)
        # derived from the configs: the paper suite runs the protocol files as shipped (low-shot with the published
        # cost rule), the quick suite shortens all but kNN, the demo runs other data
        expected = name == "paper" or (name == "quick" and entry.cfg.evaluator == "knn")
        assert assessment["comparable"] is expected, (entry.name, assessment)
        if name == "quick":
            assert entry.cfg.variant == "quick"


def test_every_evaluate_config_loads():
    from moco_bench.engine.runner import check_config
    from moco_bench.evaluators.catalog import load_evaluation

    configs = sorted(p for p in (ROOT / "evaluate").rglob("*.yaml") if "detectron2" not in p.parts)
    assert len(configs) >= 25
    for path in configs:
        check_config(load_evaluation(path))
