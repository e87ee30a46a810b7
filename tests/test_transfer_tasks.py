"""The MoCo paper's further transfer tasks: LVIS and Cityscapes instance segmentation, VOC07-only detection, semantic
segmentation (VOC, Cityscapes) and DensePose. Every protocol's model takes every converted MoCo weight; the FCN
head is the appendix's; each protocol runs a few iterations through ``moco-bench eval`` on the embedded sets and
writes its metrics; DensePose is recorded skipped without detectron2's DensePose project.

CPU-sized as tests/test_detection.py: one torch thread, tiny images, 1-2 iterations, a handful of test images.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torchvision
from checkpoint_builders import make_moco_checkpoint, trained_like
from omegaconf import OmegaConf
from torch import nn

from moco_bench import cli
from moco_bench.convert import load_backbone, read_detectron2_pkl, write_detectron2
from moco_bench.core.schema import flatten
from moco_bench.data.minicityscapes import build_minicityscapes
from moco_bench.data.minilvis import build_minilvis
from moco_bench.data.minivocseg import build_minivocseg
from moco_bench.evaluators.catalog import load_evaluation

REPO = Path(__file__).resolve().parents[1]
EVALUATE = REPO / "evaluate"
INSTANCE = ["lvis05_mrcnn_fpn_2x", "cityscapes_mrcnn_fpn", "voc07_frcnn_c4_9k"]
SEMSEG = ["voc12aug_fcn16_30k", "cityscapes_fcn16_90k"]
needs_d2 = pytest.mark.skipif(importlib.util.find_spec("detectron2") is None,
                              reason="detectron2 is not installed (scripts/install_detectron2.py, run by make setup)")
SHORT = {"SOLVER": {"MAX_ITER": 2, "IMS_PER_BATCH": 2, "WARMUP_ITERS": 1}}
SHORT_RCNN = {**SHORT, "TEST": {"PRECISE_BN": {"NUM_ITER": 1}}, "MODEL": {"RPN": {"POST_NMS_TOPK_TEST": 32}}}


@pytest.fixture(scope="module")
def moco_r50(tmp_path_factory):
    torch.manual_seed(0)
    path = make_moco_checkpoint(trained_like(torchvision.models.resnet50()), tmp_path_factory.mktemp("moco50") /
                                "checkpoint_0200.pth.tar").path
    backbone = load_backbone(path)
    return path, backbone, write_detectron2(backbone, path.parent / "r50.pkl")


@pytest.fixture(scope="module")
def moco_r18(tmp_path_factory):
    torch.manual_seed(0)
    return make_moco_checkpoint(trained_like(torchvision.models.resnet18()), tmp_path_factory.mktemp("moco18") /
                                "checkpoint_0200.pth.tar", arch="resnet18").path


@pytest.fixture(scope="module")
def tiny(data_cache):
    root = data_cache / "embedded"
    return {"lvis": build_minilvis(root / "minilvis_tiny", n_train=10, n_val=4, frequency_images=[1, 2]),
            "cityscapes": build_minicityscapes(root / "minicityscapes_tiny", n_train=3, n_val=2),
            "vocseg": build_minivocseg(root / "minivocseg_tiny", n_train=3, n_val=2, n_extra=1)}


def _d2_model(name: str, arch: str):
    from detectron2.config import get_cfg  # noqa: F401 - detectron2 must import first
    from detectron2.modeling import build_model

    from moco_bench.evaluators.detection import model as d2_model
    from moco_bench.evaluators.segmentation.trainer import new_config

    cfg = load_evaluation(EVALUATE / f"{name}.yaml")
    d2 = new_config()  # a superset of detectron2's config (the semantic head's keys)
    d2.merge_from_file(str(REPO / cfg.d2_config))
    d2.merge_from_list(d2_model.resnet_options(arch) + ["MODEL.DEVICE", "cpu"])
    norms = d2_model.usable_norms(d2, world_size=1, device="cpu")
    return cfg, d2, norms, build_model(d2)


@needs_d2
@pytest.mark.parametrize("name", INSTANCE + SEMSEG)
def test_protocol_model_takes_every_converted_moco_weight(name, moco_r50):
    from detectron2.checkpoint import DetectionCheckpointer

    from moco_bench.evaluators.detection import model as d2_model

    _, backbone, pkl = moco_r50
    cfg, d2, norms, model = _d2_model(name, backbone.arch)
    assert cfg.benchmark == name and (d2.MODEL.PIXEL_MEAN, d2.INPUT.FORMAT) == ([123.675, 116.28, 103.53], "RGB")
    assert d2.MODEL.BACKBONE.FREEZE_AT == 0 and all(v["config"] in ("SyncBN", "naiveSyncBN") for v in norms.values())
    DetectionCheckpointer(model).load(str(pkl))
    weights = read_detectron2_pkl(pkl)["model"]
    report = d2_model.check_backbone_loaded(model, weights, str(pkl))
    assert report["loaded"] == len(weights) == len(backbone.state_dict)
    expected = {"c4": {"backbone", "roi_heads"}, "fpn": {"backbone.bottom_up"}, "fcn16": {"backbone"}}
    assert set(report["placed_under"]) == next(v for k, v in expected.items() if f"_{k}" in name)


@needs_d2
def test_fcn_head_and_dilated_res5_are_the_appendix(moco_r50):
    """res5's 3x3 convs: dilation 2, stride 1 (output stride 16); head: two 3x3 convs of 256 channels, BN, ReLU,
    dilation 6; a 1x1 classifier; logits at the input's size."""
    from detectron2.layers import Conv2d

    cfg, d2, norms, model = _d2_model("voc12aug_fcn16_30k", moco_r50[1].arch)
    assert norms["MODEL.SEM_SEG_HEAD.NORM"] == {"config": "SyncBN", "used": "BN"}
    res5 = model.backbone.res5
    assert [b.conv2.dilation for b in res5] == [(2, 2)] * 3 and [b.conv2.stride for b in res5] == [(1, 1)] * 3
    assert res5[0].shortcut.stride == (1, 1) and res5[0].conv1.stride == (1, 1)
    assert model.backbone.output_shape()["res5"].stride == 16
    head = model.sem_seg_head
    convs = list(head.convs)
    assert [tuple(c.weight.shape) for c in convs] == [(256, 2048, 3, 3), (256, 256, 3, 3)]
    assert all(isinstance(c, Conv2d) and c.dilation == (6, 6) and c.padding == (6, 6) and c.bias is None
               and isinstance(c.norm, nn.BatchNorm2d) and c.norm.num_features == 256
               and c.activation is torch.nn.functional.relu for c in convs)
    assert tuple(head.predictor.weight.shape) == (21, 256, 1, 1) and head.predictor.kernel_size == (1, 1)
    model.eval()
    with torch.no_grad():  # the protocol's crop: 513 = 32 x 16 + 1 px -> 33 x 33 features -> logits on every pixel
        features = model.backbone(torch.zeros(1, 3, 513, 513))
        assert tuple(features["res5"].shape) == (1, 2048, 33, 33)
        logits, _ = head(features)
        assert logits.shape[-2:] >= (513, 513)
        out = model([{"image": torch.zeros(3, 70, 90), "height": 70, "width": 90}])[0]["sem_seg"]
    assert tuple(out.shape) == (21, 70, 90)  # inference at the original size


def _eval(ckpt: Path, config: Path, out: Path, tree: dict, capsys) -> dict:
    """``moco-bench eval`` with ``tree`` as dotted overrides; returns the written record."""
    overrides = [f"{k}={json.dumps(v)}" for k, v in flatten(tree).items()]
    rc = cli.main(["eval", str(ckpt), *overrides, "--config", str(config), "--out", str(out), "--workers", "0"])
    assert rc == 0, capsys.readouterr()
    name = load_evaluation(config).name
    record = json.loads(next(out.glob(f"checkpoint_0200-*/{name}.json")).read_text())
    assert record["status"] == "ok", record["error"]
    d = record["details"]
    assert d["images_evaluated"] == [float(d["test_images"])] and all(s > 0 for s in d["seconds_per_iter"])
    assert record["evaluation"]["comparable"] is False
    return record


def _overrides(config: Path, d2: dict, sources: dict) -> dict:
    cfg = load_evaluation(config)
    merged = OmegaConf.to_container(OmegaConf.merge(cfg.d2_overrides, d2))
    return {"d2_overrides": merged, "datasets": {"sources": sources}}


@needs_d2
def test_lvis_through_the_cli(moco_r18, tiny, tmp_path, capsys):
    root = tiny["lvis"]
    sources = {f"minilvis_{s}": {"json": str(root / "lvis" / f"lvis_v0.5_{s}.json"), "image_root": str(root / "coco")}
               for s in ("train", "val")}
    config = EVALUATE / "demo" / "lvis_mask_fpn.yaml"
    record = _eval(moco_r18, config, tmp_path, _overrides(config, SHORT_RCNN, sources), capsys)
    assert {f"APmk{s}" for s in ("", "50", "75", "r", "c", "f")} <= set(record["metrics"])
    assert {"APs", "APm"} <= set(record["details"]["other_metrics"]["segm"])


def _cityscapes_sources(root):
    return {f"minicityscapes_{s}": {"image_dir": str(root / "leftImg8bit" / s), "gt_dir": str(root / "gtFine" / s)}
            for s in ("train", "val")}


@needs_d2
def test_cityscapes_instance_through_the_cli(moco_r18, tiny, tmp_path, capsys):
    sources = _cityscapes_sources(tiny["cityscapes"])
    config = EVALUATE / "demo" / "cityscapes_mask_fpn.yaml"
    record = _eval(moco_r18, config, tmp_path, _overrides(config, SHORT_RCNN, sources), capsys)
    assert set(record["metrics"]) == {"APmk", "APmk50"}


@needs_d2
def test_voc07_only_protocol_through_the_cli(moco_r50, tiny, data_cache, tmp_path, capsys):
    """The VOC07-only protocol file itself (R50-C4, extra res5 norm) on a 4 + 20 image mini-VOC (every class in
    the test set: a class without ground truth is refused before training)."""
    from moco_bench.data import embedded

    voc = embedded.build_minivoc(data_cache / "embedded" / "minivoc_4", n_trainval=4, n_test=20)
    config = EVALUATE / "voc07_frcnn_c4_9k.yaml"
    d2 = {**SHORT_RCNN, "SOLVER": {**SHORT["SOLVER"], "MAX_ITER": 1, "STEPS": []},
          "INPUT": {"MIN_SIZE_TRAIN": [96], "MAX_SIZE_TRAIN": 128, "MIN_SIZE_TEST": 96, "MAX_SIZE_TEST": 128},
          "MODEL": {"RPN": {"POST_NMS_TOPK_TEST": 16}, "ROI_HEADS": {"BATCH_SIZE_PER_IMAGE": 16}}}
    sources = {n: {"root": str(voc), "expect": None} for n in ("voc_2007_trainval", "voc_2007_test")}
    tree = {"d2_overrides": d2, "datasets": {"sources": sources, "classes": list(embedded.FASHION_CLASSES)},
            "trials": 1}
    record = _eval(moco_r50[0], config, tmp_path, tree, capsys)
    assert set(record["metrics"]) == {"AP", "AP50", "AP75"}
    assert record["details"]["weights_loaded"]["placed_under"] == ["backbone", "roi_heads"]


@needs_d2
def test_voc_semseg_protocol_through_the_cli(moco_r50, tiny, tmp_path, capsys):
    """The VOC semantic segmentation protocol file (dilated R50 FCN) on the mini train_aug / val lists."""
    root = tiny["vocseg"]
    config = EVALUATE / "voc12aug_fcn16_30k.yaml"
    classes = ["background", "tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
               "ankle_boot"]
    d2 = {"INPUT": {"CROP": {"SIZE": [65, 65]}}, "SOLVER": {**SHORT["SOLVER"], "STEPS": [1]}}
    sources = {n: {"root": str(root), "expect": None} for n in ("voc_2012_train_aug", "voc_2012_val")}
    record = _eval(moco_r50[0], config, tmp_path, {"d2_overrides": d2, "trials": 1,
                                                  "datasets": {"sources": sources, "classes": classes}}, capsys)
    assert set(record["metrics"]) == {"mIoU"} and 0 <= record["metrics"]["mIoU"] <= 100
    assert set(record["details"]["per_class_IoU"]) == set(classes)
    assert record["details"]["norm"]["MODEL.SEM_SEG_HEAD.NORM"] == {"config": "SyncBN", "used": "BN"}
    assert record["details"]["weights_loaded"]["loaded"] == len(moco_r50[1].state_dict)


@needs_d2
def test_cityscapes_semseg_through_the_cli(moco_r18, tiny, tmp_path, capsys):
    sources = _cityscapes_sources(tiny["cityscapes"])
    config = EVALUATE / "demo" / "cityscapes_semseg_fcn16.yaml"
    record = _eval(moco_r18, config, tmp_path, _overrides(config, SHORT, sources), capsys)
    assert set(record["metrics"]) == {"mIoU"} and len(record["details"]["per_class_IoU"]) == 19


def test_densepose_without_its_project_is_skipped_with_the_install_route(tmp_path):
    if importlib.util.find_spec("densepose") is not None:
        pytest.skip("detectron2's DensePose project is installed here")
    from moco_bench.engine.runner import run_evaluation

    cfg = load_evaluation(EVALUATE / "coco_densepose_rcnn_fpn_s1x.yaml")
    record = run_evaluation(load_backbone("random:resnet18@0"), cfg, out_root=tmp_path)
    assert record["status"] == "skipped" and "subdirectory=projects/DensePose" in record["error"]
