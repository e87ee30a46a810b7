"""Precision options outside pretraining: detectron2's AMP switch, refused where it cannot run, and recorded."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from moco_bench.convert import load_backbone
from moco_bench.core.errors import ConfigError
from moco_bench.engine.comparability import assess
from moco_bench.evaluators.catalog import load_evaluation

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "evaluate" / "demo" / "voc_detection_fpn.yaml"
needs_d2 = pytest.mark.skipif(importlib.util.find_spec("detectron2") is None, reason="detectron2 is not installed")


@needs_d2
def test_detection_precision_is_detectron2_amp_and_needs_cuda(minivoc_root, tmp_path):
    from moco_bench.evaluators.base import EvalContext
    from moco_bench.evaluators.detection.detection import build_d2_config, detectron2_transfer

    backbone = load_backbone("random:resnet18_small_w0.5")  # the demo FPN config's levels are for its stem
    root = [f"datasets.sources.{n}.root={minivoc_root}" for n in load_evaluation(DEMO).datasets.sources]
    for precision, amp in (("fp32", False), ("fp16", True)):
        cfg = load_evaluation(DEMO, [*root, f"precision={precision}"])
        d2, _ = build_d2_config(backbone, cfg, tmp_path, tmp_path / "w.pkl", "cuda", 1)
        assert d2.SOLVER.AMP.ENABLED is amp
    cfg = load_evaluation(DEMO, [*root, "precision=fp16"])
    ctx = EvalContext(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", workers=0)
    with pytest.raises(ConfigError, match="precision fp16 is detectron2's AMP training, which needs a CUDA device"):
        detectron2_transfer(backbone, cfg, ctx)
    assert not (tmp_path / "out").exists()  # refused before the conversion or any trial
    with pytest.raises(ConfigError, match="precision: .*bf16"):
        load_evaluation(DEMO, ["precision=bf16"])


def test_reduced_precision_is_not_the_published_protocol():
    for path, key in ((ROOT / "evaluate" / "voc0712_frcnn_c4_24k.yaml", "precision=fp16"),
                      (ROOT / "evaluate" / "imagenet_linear.yaml", "features.precision=bf16"),
                      (ROOT / "evaluate" / "voc07_svm.yaml", "features.precision=bf16")):
        changed = assess(load_evaluation(path, [key]))
        assert changed["comparable"] is False and list(changed["differences"]) == [key.split("=")[0]], path.name
