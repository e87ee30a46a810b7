"""The embedded segmentation datasets (mini-LVIS, mini-Cityscapes, mini-VOC2012 segmentation), read back by the real
readers (the ``lvis`` API, detectron2's LVIS and Cityscapes loaders, cityscapesscripts' label definitions) and scored
by the real evaluations with their own ground truth as the prediction."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from moco_bench.data import embedded
from moco_bench.data.minicityscapes import THINGS, build_minicityscapes
from moco_bench.data.minilvis import build_minilvis
from moco_bench.data.minivocseg import VOID, build_minivocseg, voc_palette

needs_d2 = pytest.mark.skipif(importlib.util.find_spec("detectron2") is None,
                              reason="detectron2 is not installed (scripts/install_detectron2.py, run by make setup)")


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def lvis_root(data_cache):
    return build_minilvis(data_cache / "embedded" / "minilvis_test", n_train=12, n_val=4, frequency_images=[1, 2])


@pytest.fixture(scope="module")
def cityscapes_root(data_cache):
    return build_minicityscapes(data_cache / "embedded" / "minicityscapes_test", n_train=3, n_val=2)


@pytest.fixture(scope="module")
def vocseg_root(data_cache):
    return build_minivocseg(data_cache / "embedded" / "minivocseg_test", n_train=4, n_val=3, n_extra=2)


def test_builds_are_deterministic_and_registered(tmp_path, vocseg_root):
    again = build_minivocseg(tmp_path / "again", n_train=4, n_val=3, n_extra=2)
    assert _digest(again) == _digest(vocseg_root)
    assert _digest(build_minivocseg(tmp_path / "other", n_train=4, n_val=3, n_extra=2, seed=1)) != _digest(again)
    assert {"minilvis", "minicityscapes", "minivocseg"} <= set(embedded.NAMES)
    built = embedded.build("minivocseg", root=tmp_path / "cache", n_train=4, n_val=3, n_extra=2)
    assert _digest(built) == _digest(vocseg_root)


def test_minilvis_json_through_the_lvis_api_and_detectron2(lvis_root):
    from lvis import LVIS, LVISEval, LVISResults
    from pycocotools import mask as mask_utils

    gt = LVIS(str(lvis_root / "lvis" / "lvis_v0.5_val.json"))
    cats = gt.dataset["categories"]
    assert {c["frequency"] for c in cats} == {"r", "c", "f"} and all(c["image_count"] >= 1 for c in cats)
    held = {c["frequency"] for a in gt.dataset["annotations"] for c in cats if c["id"] == a["category_id"]}
    assert held == {"r", "c", "f"}  # validation holds every frequency group
    for img in gt.dataset["images"]:
        present = {a["category_id"] for a in gt.img_ann_map[img["id"]]}
        assert present and not present & set(img["neg_category_ids"]) and img["not_exhaustive_category_ids"] == []
        pixels = np.asarray(Image.open(lvis_root / "coco" / "val2017" / img["file_name"]).convert("L")) > 64
        for ann in gt.img_ann_map[img["id"]]:  # the polygon covers its item's pixels
            x, y, w, h = (int(round(v)) for v in ann["bbox"])
            item = np.zeros_like(pixels)
            item[y:y + h, x:x + w] = pixels[y:y + h, x:x + w]
            assert (item & gt.ann_to_mask(ann).astype(bool)).sum() >= 0.9 * item.sum() > 0
    perfect = [{**a, "score": 1.0} for a in gt.dataset["annotations"]]
    for a in perfect:
        rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], 96, 128))
        a["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
    ev = LVISEval(gt, LVISResults(gt, perfect), "segm")
    ev.run()
    assert {k: round(ev.get_results()[k], 6) for k in ("AP", "APr", "APc", "APf")} == dict.fromkeys(
        ("AP", "APr", "APc", "APf"), 1.0)


@needs_d2
def test_minilvis_registered_for_detectron2(lvis_root):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from moco_bench.evaluators.detection.datasets import dataset_shape, register_sources

    spec = {"format": "lvis", "json": str(lvis_root / "lvis" / "lvis_v0.5_train.json"),
            "image_root": str(lvis_root / "coco")}
    register_sources({"minilvis_test_train": spec}, None)
    records = DatasetCatalog.get("minilvis_test_train")
    assert len(records) == 12 and all(Path(r["file_name"]).is_file() for r in records)
    assert all("neg_category_ids" in r for r in records)
    meta = MetadataCatalog.get("minilvis_test_train")
    assert meta.thing_classes == list(embedded.FASHION_CLASSES) and meta.evaluator_type == "lvis"
    assert dataset_shape(spec, None) == (10, 0)


def test_minicityscapes_layout_and_label_conventions(cityscapes_root):
    from cityscapesscripts.helpers.csHelpers import getCsFileInfo
    from cityscapesscripts.helpers.labels import id2label

    images = sorted((cityscapes_root / "leftImg8bit").glob("*/*/*_leftImg8bit.png"))
    assert len(images) == 5 and {p.parent.parent.name for p in images} == {"train", "val"}
    for image in images:
        info = getCsFileInfo(str(image))  # cityscapesscripts parses <city>_<seq>_<frame>_<type>
        assert info.city == image.parent.name and info.type == "leftImg8bit"
        gt = Path(str(image).replace("leftImg8bit", "gtFine", 1).replace("_leftImg8bit.png", "_gtFine_"))
        label_ids = np.asarray(Image.open(f"{gt}labelIds.png"))
        train_ids = np.asarray(Image.open(f"{gt}labelTrainIds.png"))
        instances = np.asarray(Image.open(f"{gt}instanceIds.png"))
        assert Image.open(f"{gt}instanceIds.png").mode == "I;16" and Path(f"{gt}polygons.json").is_file()
        lut = np.array([id2label[i].trainId if i in id2label else 255 for i in range(256)])
        np.testing.assert_array_equal(train_ids, lut[label_ids])
        things = instances[instances >= 1000]
        assert things.size and {id2label[i // 1000].name for i in np.unique(things)} <= set(THINGS)
        np.testing.assert_array_equal(np.where(instances >= 1000, instances // 1000, instances), label_ids)


@needs_d2
def test_minicityscapes_scored_by_the_official_evaluation(cityscapes_root, tmp_path):
    """detectron2's loader reads the gtFine polygons; fed back as predictions, the official evaluation finds them."""
    from detectron2.data import DatasetCatalog
    from detectron2.data import detection_utils as utils
    from detectron2.structures import Instances

    from moco_bench.evaluators.detection.datasets import register_sources
    from moco_bench.evaluators.detection.trainer import CityscapesEvaluator

    register_sources({"minics_test_val": {"format": "cityscapes", "image_dir": str(cityscapes_root / "leftImg8bit/val"),
                                          "gt_dir": str(cityscapes_root / "gtFine/val")}}, None)
    evaluator = CityscapesEvaluator("minics_test_val", str(tmp_path))
    evaluator.reset()
    for record in DatasetCatalog.get("minics_test_val"):
        gt = utils.annotations_to_instances(record["annotations"], (record["height"], record["width"]), "bitmask")
        pred = Instances(gt.image_size, pred_boxes=gt.gt_boxes, pred_classes=gt.gt_classes,
                         scores=torch.ones(len(gt)), pred_masks=gt.gt_masks.tensor)
        evaluator.process([record], [{"instances": pred}])
    result = evaluator.evaluate()["segm"]
    assert result["AP50"] == pytest.approx(100.0) and result["AP"] > 80
    assert (tmp_path / "matches.json").is_file()  # cityscapesscripts' side output, kept out of the working directory


def test_minivocseg_class_pngs_void_band_and_train_aug(vocseg_root):
    seg = vocseg_root / "ImageSets" / "Segmentation"
    train, val, aug = (seg.joinpath(f"{s}.txt").read_text().split() for s in ("train", "val", "train_aug"))
    assert len(aug) == 6 and set(train) < set(aug) and not set(val) & set(aug)
    assert voc_palette()[3:6] == [128, 0, 0] and voc_palette()[3 * VOID:3 * VOID + 3] == [224, 224, 192]
    for image_id in train + val:
        cls = Image.open(vocseg_root / "SegmentationClass" / f"{image_id}.png")
        assert cls.mode == "P" and cls.getpalette()[3:6] == [128, 0, 0]
        labels, sbd = np.asarray(cls), np.asarray(Image.open(vocseg_root / "SegmentationClassAug" / f"{image_id}.png"))
        assert (labels == VOID).any() and not (sbd == VOID).any()
        np.testing.assert_array_equal(labels[labels != VOID], sbd[labels != VOID])
        assert set(np.unique(sbd)) - {0} and set(np.unique(sbd)) <= set(range(11))
    assert not (vocseg_root / "SegmentationClass" / f"{sorted(set(aug) - set(train))[0]}.png").exists()


@needs_d2
def test_voc_segmentation_lists_and_semseg_evaluator(vocseg_root, tmp_path):
    """Both train_aug list forms read the same files; SemSegEvaluator scores the ground truth 100 mIoU, void ignored."""
    from detectron2.data import DatasetCatalog
    from detectron2.evaluation import SemSegEvaluator

    from moco_bench.data import segmentation_sources
    from moco_bench.data.check import check_sources
    from moco_bench.evaluators.segmentation import datasets as seg_datasets

    ids = segmentation_sources.voc_pairs(vocseg_root, "train_aug", "SegmentationClassAug")
    deeplab = tmp_path / "VOC2012"
    (deeplab / "ImageSets" / "Segmentation").mkdir(parents=True)
    (deeplab / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("".join(
        f"/{i.relative_to(vocseg_root)} /{s.relative_to(vocseg_root)}\n" for i, s in ids))
    for sub in ("JPEGImages", "SegmentationClassAug"):
        (deeplab / sub).symlink_to(vocseg_root / sub)
    pairs = segmentation_sources.voc_pairs(deeplab, "train_aug", "ignored")
    assert [(i.name, s.name) for i, s in pairs] == [(i.name, s.name) for i, s in ids]
    classes = ["background", *embedded.FASHION_CLASSES]
    spec = {"format": "voc_seg", "root": str(vocseg_root), "split": "val", "labels": "SegmentationClass",
            "ignore_label": VOID, "expect": 3}
    check_sources({"minivocseg_test_val": spec}, ["minivocseg_test_val"], None)
    seg_datasets.register_sources({"minivocseg_test_val": spec}, classes)
    evaluator = SemSegEvaluator("minivocseg_test_val", distributed=False)
    evaluator.reset()
    for record in DatasetCatalog.get("minivocseg_test_val"):
        labels = torch.as_tensor(np.asarray(Image.open(record["sem_seg_file_name"])).astype(np.int64))
        logits = torch.nn.functional.one_hot(labels.clamp(max=len(classes) - 1), len(classes)).permute(2, 0, 1)
        evaluator.process([record], [{"sem_seg": logits.float()}])
    assert evaluator.evaluate()["sem_seg"]["mIoU"] == pytest.approx(100.0)
