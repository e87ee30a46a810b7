"""The raw-pixel reference (``pixels:``): the kNN protocol on the flattened normalized image equals a direct
computation, the linear protocol trains its fc on the image, and what has no meaning without a network (layers,
detection, weights to write) is refused with a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from moco_bench.convert import load_backbone, write_outputs
from moco_bench.core.errors import CheckpointError, ConfigError
from moco_bench.data.catalog import open_split
from moco_bench.data.transforms import eval_transform
from moco_bench.engine.runner import run_evaluation
from moco_bench.evaluators.catalog import load_evaluation, pixel_protocols
from moco_bench.evaluators.neighbours import knn_multi_k
from moco_bench.results.store import checkpoint_label

EVALUATE = Path(__file__).resolve().parents[1] / "evaluate"


def _ok(record):
    assert record["status"] == "ok", record["error"]
    return record


def test_pixels_is_a_baseline_without_weights(tmp_path):
    pixels = load_backbone("pixels:")
    assert (pixels.arch, pixels.format, pixels.state_dict, pixels.epoch) == ("pixels", "pixels", {}, 0)
    assert pixels.record()["recipe"]["method"] == "raw pixels"
    assert checkpoint_label(pixels.path, pixels.sha256).startswith("pixels-")
    assert pixels.build_model()(torch.ones(2, 3, 4, 4)).shape == (2, 48)
    with pytest.raises(CheckpointError, match="no weights to write"):
        write_outputs(pixels, tmp_path)
    with pytest.raises(CheckpointError, match="takes no options"):
        load_backbone("pixels:rgb")


def test_knn_on_pixels_equals_the_vote_on_flattened_images(imagefolder_root, tmp_path):
    cfg = load_evaluation(EVALUATE / "demo" / "imagenet_knn.yaml", [f"data.root={imagefolder_root}", "knn.k=[10,20]"])
    record = _ok(run_evaluation(load_backbone("pixels:"), cfg, out_root=tmp_path, workers=0))
    t = cfg.transform
    splits = [open_split(cfg.data, split, eval_transform(t.test, t.mean, t.std), "test")
              for split in (cfg.data.train_split, cfg.data.test_split)]
    (train, train_y), (val, val_y) = [(torch.stack([x.flatten() for x, _ in s]).numpy(), np.asarray(s.targets))
                                      for s in splits]
    assert train.shape[1] == 3 * 32 * 32
    expected = knn_multi_k(train, train_y, val, val_y, [10, 20], 0.07, 10)
    assert record["metrics"]["top1@k20"] == pytest.approx(expected[20][0])
    assert record["checkpoint"]["format"] == "pixels" and record["checkpoint"]["recipe"]["method"] == "raw pixels"


def test_linear_on_pixels_trains_its_fc_on_the_image(imagefolder_root, tmp_path):
    cfg = load_evaluation(EVALUATE / "demo" / "imagenet_linear.yaml", [
        f"data.root={imagefolder_root}", "optim.batch_size=64", "schedule.epochs=1", "schedule.milestones=[1]"])
    record = _ok(run_evaluation(load_backbone("pixels:"), cfg, out_root=tmp_path, workers=0))
    # 3 steps on 200 images: 26 of 100 val images right; chance is 10 (an untrained fc: 10 +- 3)
    assert record["metrics"]["top1"] > 18 and record["evaluation"]["layer"] == "gap"


def test_what_needs_a_network_is_refused_before_any_work(imagefolder_root, minivoc_root, tmp_path):
    assert pixel_protocols() == ["knn", "linear"]
    for name in ("imagenet_mhead_linear_fast.yaml", "voc07_svm.yaml", "voc_detection_fpn.yaml"):
        cfg = load_evaluation(EVALUATE / "demo" / name)
        with pytest.raises(ConfigError, match=rf"{cfg.evaluator} protocol needs a network; raw pixels run only "
                                              r"with .*knn, linear"):
            run_evaluation(load_backbone("pixels:"), cfg, out_root=tmp_path, workers=0)
    assert not any(tmp_path.iterdir())
