"""Tables and plots: our rows beside the published ones, deltas, duplicates, bad files, every format."""

from __future__ import annotations

import pandas as pd
import pytest

from moco_bench.cli import main
from moco_bench.core.env import environment
from moco_bench.core.errors import ConfigError, DataError
from moco_bench.results.pivot import build_pivot
from moco_bench.results.published import load_published
from moco_bench.results.report import write_report
from moco_bench.results.schema import make_record
from moco_bench.results.store import default_label, load_results, write_result
from moco_bench.results.tables import compile_tables
from moco_bench.results.uncertainty import Uncertainty

SHA = "c0ffee" + "0" * 58
PUBLISHED = {"voc07_svm": "fair-ssb svm feature5", "voc07_lowshot_svm": "fair-ssb lowshot feature5",
             "imagenet_knn": "weighted kNN T0.07 GAP", "imagenet_mhead_linear": "mmselfsup mhead 90ep",
             "imagenet_linear": "main_lincls lr30 100ep", "voc0712_frcnn_c4_24k": "moco detectron2 C4"}
V2_200 = {"method": "MoCo v2", "epochs": 200, "arch": "R50", "pretrain_data": "IN-1M", "source": "test"}


def _write(folder, name, benchmark, metrics, *, end="2026-11-22T10:00:00+00:00", layer="", variant="",
           comparable=True, status="ok", checkpoint=("/ckpts/checkpoint_0200.pth.tar", SHA), recipe=V2_200,
           note="not comparable: schedule.epochs 100 -> 10"):
    rec = make_record(
        evaluation={"name": name, "protocol": name, "config": {}, "benchmark": benchmark, "dataset": "VOC2007",
                    "layer": layer, "variant": variant, "comparable": comparable,
                    "comparability_note": "the published protocol" if comparable else note,
                    "published_protocol": PUBLISHED.get(benchmark)},
        checkpoint={"path": checkpoint[0], "sha256": checkpoint[1], "format": "moco", "arch": "resnet50",
                    "epochs": recipe["epochs"], "recipe": recipe},
        metrics=metrics if status == "ok" else {}, environment=environment(),
        timing={"start": end, "end": end, "seconds": {}}, status=status,
        error=None if status == "ok" else "MissingDependency: detectron2 is not installed",
    )
    write_result(folder / f"{name}-{end[11:13]}.json", rec)


@pytest.fixture
def results(tmp_path):
    d = tmp_path / "runs" / "checkpoint_0200-c0ffee00"
    _write(d, "voc07_svm", "voc07_svm", {"mAP": 83.0}, layer="feature5", end="2026-11-22T09:00:00+00:00")
    _write(d, "voc07_svm", "voc07_svm", {"mAP": 84.5}, layer="feature5", end="2026-11-22T11:00:00+00:00")
    _write(d, "lowshot", "voc07_lowshot_svm", {f"mAP@k{k}": 40 + 4 * i for i, k in enumerate((1, 2, 4, 8))},
           layer="feature5")
    _write(d, "knn", "imagenet_knn", {"top1@k20": 50.0, "top1@k200": 48.0})
    _write(d, "mhead", "imagenet_mhead_linear", {f"feature{i}_top1": 10.0 * i for i in range(1, 6)}, layer="all")
    _write(d, "mhead_fast", "imagenet_mhead_linear", {"feature5_top1": 99.0}, layer="all",
           variant="fast: cached features", comparable=False)
    _write(d, "det", "voc0712_frcnn_c4_24k", {}, status="skipped")
    (d / "broken.json").write_text("{")
    return tmp_path / "runs"


def test_tables_hold_ours_and_published(results):
    with pytest.warns(UserWarning, match="broken.json"):
        df = load_results(results)
    tables = compile_tables(df, load_published())
    assert set(tables) == {"voc07_svm", "voc07_lowshot_svm", "imagenet_knn", "imagenet_mhead_linear",
                           "imagenet_mhead_linear [fast: cached features]"}
    svm = tables["voc07_svm"]
    mine = svm[svm["row"] == "ours"]
    assert mine["value"].tolist() == [84.5]
    assert mine["note"].tolist() == ["newest of 2 results; also published: 84.26 (openselfsup-zoo)"]
    assert mine["delta"].round(2).tolist() == [0.46]  # 84.5 - 84.04 (MoCo v2 200ep, mmselfsup)
    assert mine["layer"].tolist() == ["feature5"] and mine["protocol"].tolist() == ["voc07_svm"]
    assert (svm["row"] == "published").sum() >= 4
    mh = tables["imagenet_mhead_linear"]
    assert mh.loc[mh["row"] == "ours", "layer"].tolist() == [f"feature{i}" for i in range(1, 6)]
    fast = tables["imagenet_mhead_linear [fast: cached features]"]
    assert fast.loc[fast["row"] == "ours", "delta"].isna().all()  # not comparable: no delta
    knn = tables["imagenet_knn"]
    assert knn.loc[knn["row"] == "ours", "reference"].str.contains("mmselfsup-mocov2").all()


def test_report_files_and_cli(results, tmp_path):
    out = tmp_path / "report"
    assert main(["tables", str(results), "-o", str(out), "--published"]) == 0
    text = (out / "report.md").read_text()
    assert "## voc07_svm" in text and "84.50" in text and "84.04" in text and "+0.46" in text
    assert "detectron2 is not installed" in text and "broken.json" in text
    for ext in ("csv", "md", "tex"):
        assert (out / "tables" / f"voc07_lowshot_svm.{ext}").stat().st_size > 100
    assert pd.read_csv(out / "tables" / "voc07_svm.csv")["row"].tolist()[0] == "ours"
    # one figure per (table, dataset, kind); the fixture's records all name VOC2007
    stems = ["imagenet_knn__voc2007__knn", "imagenet_mhead_linear__voc2007__layers",
             "voc07_lowshot_svm__voc2007__lowshot"]
    files = sorted(p.name for p in (out / "plots").iterdir())
    assert files == sorted(f"{s}.{e}" for s in stems for e in ("pdf", "png"))
    assert "(plots/voc07_lowshot_svm__voc2007__lowshot.png)" in text and (out / "report.html").is_file()


def test_empty_results_folder_is_an_error(tmp_path):
    (tmp_path / "runs").mkdir()
    with pytest.raises(DataError, match=r"runs: no moco-bench results found \(no report written\)"):
        write_report([tmp_path / "runs"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _pivot(results, baseline=None):
    with pytest.warns(UserWarning, match="broken.json"):
        df = load_results(results)
    return build_pivot(compile_tables(df, load_published()), Uncertainty(df), baseline)


def test_summary_sets_checkpoints_side_by_side(results, tmp_path):
    """The pivot: one column per checkpoint (by label), the baseline column chosen, one row per benchmark metric."""
    _write(results / "random", "knn", "imagenet_knn", {"top1@k20": 30.0, "top5@k20": 60.0},
           checkpoint=("random:resnet50@0", "ba5e" + "0" * 60))
    pivot = _pivot(results)
    ours_col, base_col = "ckpts/checkpoint_0200", "random init resnet50"  # the default labels of the two paths
    assert pivot.columns == [ours_col, base_col] and pivot.baseline == base_col
    rows = {(g.table, r.metric): r for g in pivot.groups for r in g.rows}
    assert {c: x.value for c, x in rows[("imagenet_knn", "top1@k20")].cells.items()} == {ours_col: 50.0,
                                                                                         base_col: 30.0}
    assert rows[("imagenet_knn", "top1@k20")].diffs[ours_col].value == 20.0
    assert rows[("imagenet_knn", "top1@k20")].cells[ours_col].best
    assert list(rows[("imagenet_knn", "top1@k200")].cells) == [ours_col]  # the baseline has no k200
    lowshot = [r.metric for g in pivot.groups if g.table == "voc07_lowshot_svm" for r in g.rows]
    assert lowshot == [f"mAP@k{k} (feature5)" for k in (1, 2, 4, 8)]  # natural order of k, layer named
    assert rows[("voc07_svm", "mAP (feature5)")].cells[ours_col].value == 84.5  # the newest of the two records
    assert rows[("voc07_svm", "mAP (feature5)")].published == "84.04"
    assert [r.metric for g in pivot.groups if g.table == "imagenet_mhead_linear [fast: cached features]"
            for r in g.rows] == ["feature5_top1"]
    knn = next(g for g in pivot.groups if g.table == "imagenet_knn")
    assert knn.verdict[0].startswith(f"{ours_col} vs {base_col}: above on 1 of 1 metric")
    report = (write_report([results], tmp_path / "report")).read_text()
    assert report.index("## Summary") < report.index("## voc07_svm")
    assert "| ckpts/checkpoint_0200 " in report and "+20.00" in report
    assert (tmp_path / "report" / "tables" / "summary.csv").is_file()


def test_labels_name_columns_and_checkpoints_sharing_one_stay_apart(results):
    """Two checkpoints with the same label (two runs' checkpoint_0200) get their hash prefix; --baseline picks a
    column by its label and refuses one that is not there, naming those that are."""
    _write(results / "other", "knn", "imagenet_knn", {"top1@k20": 40.0},
           checkpoint=("/ckpts/checkpoint_0200.pth.tar", "beef" + "0" * 60))
    pivot = _pivot(results, baseline="ckpts/checkpoint_0200 #beef0000")
    assert set(pivot.columns) == {"ckpts/checkpoint_0200 #c0ffee00", "ckpts/checkpoint_0200 #beef0000"}
    row = next(r for g in pivot.groups for r in g.rows if r.key[3] == "top1@k20")
    assert row.diffs["ckpts/checkpoint_0200 #c0ffee00"].value == 10.0
    with pytest.raises(ConfigError, match=r"--baseline 'nope': no checkpoint of this report has that label \(they "
                                          r"are: 'ckpts/checkpoint_0200 #beef0000', "):
        _pivot(results, baseline="nope")


@pytest.mark.parametrize("path, label", [
    ("/runs/mocov2_demo/checkpoint_0002.pth.tar", "mocov2_demo/checkpoint_0002"),
    ("/runs/x/moco_v2_800ep_pretrain.pth.tar", "moco_v2_800ep_pretrain"),
    ("/runs/x/model_final.pkl", "x/model_final"), ("random:resnet50@0", "random init resnet50"),
    ("random:resnet50@3", "random init resnet50 seed 3"), ("pixels:", "raw pixels")])
def test_default_labels_are_readable(path, label):
    assert default_label(path) == label
