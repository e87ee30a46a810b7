"""Readers on real files and on each kind of bad input: one clear error naming the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from moco_bench.core.errors import DataError, DatasetNotFound, MocoBenchError
from moco_bench.data.catalog import open_split
from moco_bench.data.coco import load_coco
from moco_bench.data.imagefolder import ImageFolder
from moco_bench.data.voc import VOCClassification, read_image_set, read_voc_annotation

LABELME_VOC = Path("/usr/share/doc/labelme-examples/examples/bbox_detection/data_dataset_voc")


@pytest.mark.skipif(not LABELME_VOC.is_dir(), reason="Debian's labelme-examples is not installed")
def test_labelme_real_voc_photos():
    expected = {
        "2011_000003": [("person", (191.0, 107.369, 313.0, 329.369)), ("person", (365.0, 83.0, 500.0, 333.0))],
        "2011_000006": 4,
        "2011_000025": 3,
    }
    for image_id, want in expected.items():
        ann = read_voc_annotation(LABELME_VOC / "Annotations" / f"{image_id}.xml")
        assert (LABELME_VOC / "JPEGImages" / ann["filename"]).is_file()
        assert not any(o["difficult"] for o in ann["objects"])
        if isinstance(want, int):
            assert len(ann["objects"]) == want
            continue
        assert (ann["width"], ann["height"]) == (500, 338)
        got = [(o["name"], tuple(round(v, 3) for v in o["bbox"])) for o in ann["objects"]]
        assert got == want


def _copy_voc(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_dataset_folders(tmp_path):
    with pytest.raises(DatasetNotFound, match=str(tmp_path / "nope")):
        read_image_set(tmp_path / "nope", "test")
    with pytest.raises(DatasetNotFound, match="dataset folder not found"):
        ImageFolder(tmp_path / "imagenet" / "train")
    with pytest.raises(DatasetNotFound, match="annotation file not found"):
        load_coco(tmp_path / "instances.json", tmp_path)


def test_split_file_naming_missing_image(minivoc_root, tmp_path):
    voc = _copy_voc(minivoc_root, tmp_path / "VOC2007")
    ids = read_image_set(voc, "test")
    (voc / "JPEGImages" / f"{ids[3]}.jpg").unlink()
    with pytest.raises(DataError, match=rf"test.txt: names image '{ids[3]}' but .*{ids[3]}.jpg does not exist"):
        read_image_set(voc, "test")


def test_malformed_xml(minivoc_root, tmp_path):
    voc = _copy_voc(minivoc_root, tmp_path / "VOC2007")
    bad = voc / "Annotations" / "000001.xml"
    bad.write_text("<annotation><size><width>12</width>")
    with pytest.raises(DataError, match=r"000001.xml: malformed VOC annotation XML"):
        read_voc_annotation(bad)
    bad.write_text("<annotation><size><width>12</width><height>8</height></size><object><name>bag</name>"
                   "<bndbox><xmin>a</xmin></bndbox></object></annotation>")
    with pytest.raises(DataError, match=r"000001.xml: VOC annotation lacks"):
        read_voc_annotation(bad)


def test_bad_label_file(minivoc_root, tmp_path):
    voc = _copy_voc(minivoc_root, tmp_path / "VOC2007")
    path = voc / "ImageSets" / "Main" / "bag_test.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0].split()[0] + " 2"] + lines[1:]) + "\n")
    with pytest.raises(DataError, match=r"bag_test.txt:1: expected '<image id> <1\|-1\|0>'"):
        VOCClassification(voc, "test", ["bag"])


def test_unreadable_image(minivoc_root, imagefolder_root, tmp_path):
    voc = _copy_voc(minivoc_root, tmp_path / "VOC2007")
    ds = VOCClassification(voc, "test", ["bag"])
    ds.images[0].write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=rf"{ds.images[0]}: unreadable image"):
        ds[0]
    folder = shutil.copytree(imagefolder_root / "val", tmp_path / "val")
    ds = ImageFolder(folder)
    Path(ds.samples[5][0]).write_bytes(b"")
    with pytest.raises(DataError, match="unreadable image"):
        ds[5]


def test_imagefolder_class_count_and_published_image_count(imagefolder_root):
    """The checks every reader shares (moco_bench.data.readers.open_split): class count, image count."""
    data = {"reader": "imagefolder", "root": str(imagefolder_root), "classes": 10, "expect": {"val": 100}}
    assert len(open_split(data, "val")) == 100
    with pytest.raises(DataError, match="has 10 classes, the config expects 1000"):
        open_split({**data, "classes": 1000}, "val")
    with pytest.raises(DataError, match="100 images, but the published split has 50000: a partial"):
        open_split({**data, "expect": {"val": 50000}}, "val")
    with pytest.raises(MocoBenchError, match="data.reader is 'lmdb'; expected one of .*imagefolder, imagelist, inat"):
        open_split({**data, "reader": "lmdb"}, "val")


def test_coco_missing_image_and_bad_json(minicoco_root, tmp_path):
    images = shutil.copytree(minicoco_root / "test", tmp_path / "test")
    next(images.iterdir()).unlink()
    with pytest.raises(DataError, match="not found under"):
        load_coco(minicoco_root / "annotations" / "instances_test.json", images)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json: not a COCO instances JSON"):
        load_coco(bad, images)
