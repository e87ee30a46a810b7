"""A reduced `make demo`, end to end: data, pretraining, eval-all on pretrained and random, the report."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from moco_bench.demo import run_demo

ROOT = Path(__file__).resolve().parents[1]


def test_reduced_demo_end_to_end(imagefolder_root, minivoc_root, tmp_path, capfd, caplog):
    caplog.set_level(logging.INFO)
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "version: 1\nname: reduced-demo\nevaluations:\n"
        f"  - config: {ROOT / 'evaluate/demo/imagenet_knn.yaml'}\n    overrides: [benchmark=imagenet_knn]\n"
        f"  - config: {ROOT / 'evaluate/demo/voc07_svm.yaml'}\n    overrides: ['svm.costs=[0.1,1.0]']\n"
    )
    report = run_demo(
        tmp_path / "demo",
        pretrain_overrides=["optim.epochs=1", "data.batch_size=32", "model.K=256", "monitor.knn_every=0"],
        data={"imagefolder": dict(train_per_class=20, val_per_class=10, size=32),
              "minivoc": dict(n_trainval=40, n_test=40)},
        suite=suite,
    )
    assert (tmp_path / "demo" / "pretrain" / "checkpoint_0000.pth.tar").is_file()
    text = report.read_text()
    assert "## imagenet_knn" in text and "## minivoc_svm" in text
    knn = pd.read_csv(report.parent / "tables" / "imagenet_knn.csv")
    ours = knn[knn["row"] == "ours"]
    checkpoints = {"MoCo v2 demo (1 ep)", "random init resnet18_small_w0.5", "raw pixels"}  # pixels: kNN, linear
    assert set(ours["method"]) == checkpoints
    assert ours["delta"].isna().all() and ours["note"].str.contains("not comparable").all()
    assert (knn["row"] == "published").sum() >= 4
    svm = pd.read_csv(report.parent / "tables" / "minivoc_svm.csv")
    # the demo's own benchmark: no published row of VOC2007 is set beside a mini-VOC number
    assert set(svm["row"]) == {"ours"} and (svm["metric"] == "mAP").all()
    summary = pd.read_csv(report.parent / "tables" / "summary.csv")  # the pivot: a line per (row, checkpoint)
    assert set(summary["checkpoint"]) == checkpoints and set(summary["baseline"]) == {"random init resnet18_small_w0.5"}
    svm = summary[summary["metric"] == "mAP"]
    assert set(svm["table"]) == {"minivoc_svm"} and "raw pixels" not in set(svm["checkpoint"])  # no SVM on pixels
    assert svm["low"].notna().all() and (svm["low"] <= svm["high"]).all()  # bootstrap intervals over test images
    printed = capfd.readouterr()
    assert "| top1@k20" in printed.out and "Verdict: MoCo v2 demo (1 ep) vs random init" in printed.out
    assert f"report: {report}" in printed.out
    # off a terminal (pytest captures the output): no progress frames, one log line per pretraining epoch, no
    # cyanure warning printed
    assert "\r" not in printed.out + printed.err and "instability" not in printed.err
    assert [r.getMessage().split(":")[0] for r in caplog.records if r.getMessage().startswith("epoch 1/")] == \
        ["epoch 1/1"]
