"""The transfer suite as shipped: it loads with every protocol comparable, its published rows name the protocol and
metric its configs report, and the report's suite table gives each dataset's column and the mean over all of them
(only for a row that has every dataset)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from moco_bench.core.env import environment
from moco_bench.engine.runner import check_config
from moco_bench.engine.suite import load_suite
from moco_bench.evaluators.catalog import load_evaluation
from moco_bench.results.published import PUBLISHED_DATASETS, load_published
from moco_bench.results.report import write_report
from moco_bench.results.schema import make_record
from moco_bench.results.store import load_results, write_result
from moco_bench.results.tables import compile_tables
from moco_bench.results.transfer import suite_table

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ["aircraft", "caltech101", "cars", "cifar10", "cifar100", "dtd", "flowers", "food101", "pets", "sun397",
            "voc2007"]


def test_transfer_suites_load():
    suite = load_suite(ROOT / "suites" / "transfer.yaml")
    assert [e.name for e in suite.entries] == [f"transfer_{d}" for d in DATASETS] + ["imagenet_probe_grid"]
    assert all(check_config(e.cfg)["comparable"] for e in suite.entries)
    demo = load_suite(ROOT / "suites" / "transfer_demo.yaml")
    assert not any(check_config(e.cfg)["comparable"] for e in demo.entries)


def test_published_rows_match_the_protocol_files():
    pub = load_published()
    rows = pub[pub["benchmark"].str.startswith("transfer_")]
    assert len(rows) >= 8 and set(rows["protocol"]) == {"ssl-transfer logreg"}
    for _, row in rows.iterrows():
        cfg = load_evaluation(ROOT / "evaluate" / f"{row['benchmark']}.yaml")
        assert row["metric"] == cfg.logreg.metric and cfg.comparability.published == row["protocol"]
        assert row["dataset"] == PUBLISHED_DATASETS[row["benchmark"]] == cfg.data.name
        assert 0 < row["value"] <= 100 and row["source"] == "ericsson-paper"


def _record(folder: Path, dataset: str, value: float, label: str) -> None:
    cfg = load_evaluation(ROOT / "evaluate" / f"transfer_{dataset}.yaml")
    rec = make_record(
        evaluation={"name": cfg.name, "protocol": cfg.name, "config": {}, "benchmark": cfg.benchmark, "layer": "gap",
                    "comparable": True, "published_protocol": cfg.comparability.published, "comparability_note": "",
                    "dataset": cfg.data.name},
        checkpoint={"path": f"/c/{label}.pth.tar", "sha256": label[0] * 64, "format": "moco", "arch": "resnet50",
                    "epochs": 200, "label": label,
                    "recipe": {"method": "MoCo v2", "epochs": 200, "arch": "R50", "pretrain_data": "IN-1M"}},
        metrics={str(cfg.logreg.metric): value}, environment=environment(),
        timing={"start": "s", "end": "e", "seconds": {}})
    write_result(folder / label / f"{cfg.name}.json", rec)


def test_suite_table_averages_only_complete_rows(tmp_path):
    for i, d in enumerate(DATASETS):
        _record(tmp_path / "runs", d, 50.0 + i, "full")
    _record(tmp_path / "runs", "dtd", 70.0, "partial")
    table = suite_table(compile_tables(load_results(tmp_path / "runs"), load_published()))
    ours = table[table["row"] == "ours"].set_index("method")
    assert ours.loc["full", "average"] == pytest.approx(50.0 + 5.0) and ours.loc["full", "datasets"] == 11
    assert pd.isna(ours.loc["partial", "average"]) and ours.loc["partial", "mean_of_present"] == 70.0
    published = table[table["row"] == "published"].set_index("method")
    assert published.loc["supervised", "dtd"] == pytest.approx(72.23)
    assert pd.isna(published.loc["supervised", "average"])  # no published row has all eleven datasets yet
    report = write_report([tmp_path / "runs"], tmp_path / "report")
    text = (Path(report) / "report.md").read_text() if Path(report).is_dir() else Path(report).read_text()
    assert "transfer suite" in text and "55.00" in text


def test_plan_states_the_suites_gpu_hours(tmp_path):
    from moco_bench.convert import load_backbone
    from moco_bench.engine.plan import plan

    rows, totals = plan(load_backbone("random:resnet50"), load_suite(ROOT / "suites" / "transfer.yaml"), tmp_path)
    assert all(r["gpu_hours"] is not None and r["gpu_hours"] > 0 for r in rows), rows
    hours = {r["evaluation"]: r["gpu_hours"] for r in rows}
    assert totals["all"] == pytest.approx(sum(hours.values()))
    # the features dominate: ImageNet's 1.33 M images against the transfer sets' 0.2 M
    assert hours["imagenet_probe_grid"] > sum(v for k, v in hours.items() if k.startswith("transfer_"))
