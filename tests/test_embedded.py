"""The embedded datasets, read back through the real readers (torchvision ImageFolder, pycocotools)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision import datasets

from moco_bench.core.errors import DataError
from moco_bench.data import embedded
from moco_bench.data.coco import load_coco
from moco_bench.data.voc import VOCClassification, read_image_set, read_voc_annotation

CLASSES = embedded.FASHION_CLASSES


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_imagefolder_counts_and_classes(imagefolder_root):
    for split, per_class in (("train", 20), ("val", 10)):
        ds = datasets.ImageFolder(str(imagefolder_root / split))
        assert ds.classes == sorted(CLASSES)
        assert Counter(ds.targets) == {i: per_class for i in range(10)}
        assert Image.open(ds.samples[0][0]).size == (32, 32)


def test_builds_are_deterministic(tmp_path):
    a = embedded.build_minivoc(tmp_path / "a", n_trainval=6, n_test=4, seed=3)
    b = embedded.build_minivoc(tmp_path / "b", n_trainval=6, n_test=4, seed=3)
    assert _tree_digest(a) == _tree_digest(b)
    c = embedded.build_minivoc(tmp_path / "c", n_trainval=6, n_test=4, seed=4)
    assert _tree_digest(a) != _tree_digest(c)


def test_rebuild_same_options_is_noop_and_other_options_refused(tmp_path):
    out = embedded.build_imagefolder(tmp_path / "f", train_per_class=2, val_per_class=1)
    stamp = (out / embedded.MANIFEST).stat().st_mtime_ns
    embedded.build_imagefolder(tmp_path / "f", train_per_class=2, val_per_class=1)
    assert (out / embedded.MANIFEST).stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match="built with other options"):
        embedded.build_imagefolder(tmp_path / "f", train_per_class=3, val_per_class=1)
    embedded.build_imagefolder(tmp_path / "f", train_per_class=3, val_per_class=1, force=True)
    assert len(list((out / "train").rglob("*.png"))) == 30


def test_minivoc_layout_labels_and_boxes(minivoc_root):
    main = minivoc_root / "ImageSets" / "Main"
    trainval, train, val, test = (read_image_set(minivoc_root, s) for s in ("trainval", "train", "val", "test"))
    assert len(trainval) == 40 and len(test) == 40 and train + val == trainval
    assert not set(trainval) & set(test)
    ds = VOCClassification(minivoc_root, "test", CLASSES)
    n_difficult = 0
    for i, image_id in enumerate(ds.ids):
        ann = read_voc_annotation(minivoc_root / "Annotations" / f"{image_id}.xml")
        assert ann["filename"] == f"{image_id}.jpg" and (ann["width"], ann["height"]) == (128, 96)
        assert Image.open(minivoc_root / "JPEGImages" / ann["filename"]).size == (128, 96)
        instances = np.asarray(Image.open(minivoc_root / "SegmentationObject" / f"{image_id}.png"))
        expected = np.full(len(CLASSES), -1.0)
        for k, obj in enumerate(ann["objects"], start=1):
            ys, xs = np.nonzero(instances == k)
            assert obj["bbox"] == (xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1)
            c = CLASSES.index(obj["name"])
            expected[c] = max(expected[c], 0.0 if obj["difficult"] else 1.0)
            n_difficult += obj["difficult"]
        np.testing.assert_array_equal(ds.targets[i], expected)
    assert (main / "coat_test.txt").read_text().splitlines()[0].split()[0] == test[0]
    assert n_difficult > 0 and (ds.targets == 1).any() and (ds.targets == -1).any()


def test_minicoco_matches_voc(minivoc_root, minicoco_root):
    for split in ("trainval", "test"):
        coco = load_coco(minicoco_root / "annotations" / f"instances_{split}.json", minicoco_root / split)
        ids = read_image_set(minivoc_root, split)
        assert sorted(coco.getImgIds()) == [int(i) for i in ids]
        for image_id in ids[:10]:
            ann = read_voc_annotation(minivoc_root / "Annotations" / f"{image_id}.xml")
            anns = coco.loadAnns(coco.getAnnIds(imgIds=int(image_id)))
            assert len(anns) == len(ann["objects"])
            instances = np.asarray(Image.open(minivoc_root / "SegmentationObject" / f"{image_id}.png"))
            for k, (a, obj) in enumerate(zip(anns, ann["objects"]), start=1):
                assert coco.loadCats(a["category_id"])[0]["name"] == obj["name"]
                x0, y0, x1, y1 = obj["bbox"]
                assert a["bbox"] == [x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1]
                mask = coco.annToMask(a)
                np.testing.assert_array_equal(mask.astype(bool), instances == k)
                assert a["area"] == mask.sum() and len(a["keypoints"]) == 15
    cats = json.loads((minicoco_root / "annotations" / "instances_test.json").read_text())["categories"]
    assert [c["name"] for c in cats] == list(CLASSES)
