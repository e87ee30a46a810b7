"""PASCAL VOC (VOCdevkit/VOC2007, VOC2012) readers: image lists, per-class 1/-1/0 labels, XML boxes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence
from xml.etree import ElementTree as ET

import numpy as np

from moco_bench.core.errors import DataError, DatasetNotFound
from moco_bench.data.images import load_rgb

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


IMAGE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _check_root(root: Path) -> None:
    missing = [d for d in ("JPEGImages", "Annotations", "ImageSets/Main") if not (root / d).is_dir()]
    if len(missing) == 3:
        raise DatasetNotFound(f"{root}: VOC folder not found (expected VOCdevkit/VOC2007 with JPEGImages, "
                              "Annotations, ImageSets/Main)")
    if missing:
        raise DataError(f"{root}: not a VOC year folder (VOCdevkit/VOC2007 layout); missing {', '.join(missing)}")


def read_image_set(root: Path, split: str) -> List[str]:
    """Image ids of ``ImageSets/Main/<split>.txt``; every id must have its JPEG."""
    root = Path(root)
    _check_root(root)
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise DataError(f"{path}: split file not found (expected one image id per line)")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    for i in ids:
        if not IMAGE_ID.fullmatch(i):  # an id is a file name in JPEGImages/, never a path out of the dataset
            raise DataError(f"{path}: image id {i!r} is not a name (letters, digits, _ . -)")
        if not (root / "JPEGImages" / f"{i}.jpg").is_file():
            raise DataError(f"{path}: names image {i!r} but {root / 'JPEGImages' / (i + '.jpg')} does not exist")
    if not ids:
        raise DataError(f"{path}: split file is empty")
    return ids


def read_class_labels(root: Path, split: str, classes: Sequence[str], ids: Sequence[str]) -> np.ndarray:
    """(N, C) float32 of 1 (present), -1 (absent), 0 (difficult only) from ``<class>_<split>.txt``."""
    index = {i: n for n, i in enumerate(ids)}
    labels = np.full((len(ids), len(classes)), np.nan, dtype=np.float32)
    for c, name in enumerate(classes):
        path = Path(root) / "ImageSets" / "Main" / f"{name}_{split}.txt"
        if not path.is_file():
            raise DataError(f"{path}: per-class label file not found (class {name!r} of the config)")
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("1", "-1", "0"):
                raise DataError(f"{path}:{lineno}: expected '<image id> <1|-1|0>', got {line!r}")
            if parts[0] not in index:
                raise DataError(f"{path}:{lineno}: image {parts[0]!r} is not in ImageSets/Main/{split}.txt")
            labels[index[parts[0]], c] = float(parts[1])
    missing = np.argwhere(np.isnan(labels))
    if len(missing):
        n, c = missing[0]
        raise DataError(f"{Path(root) / 'ImageSets' / 'Main' / f'{classes[c]}_{split}.txt'}: "
                        f"no label for image {ids[n]!r}")
    return labels


def voc_annotation_xml(filename: str, width: int, height: int, objects: Sequence[Dict], database: str = "",
                       segmented: bool = False) -> bytes:
    """A VOC annotation XML: ``objects`` are ``{name, bbox (xmin, ymin, xmax, ymax; 1-based, inclusive),
    difficult}``; the writer of the embedded mini-VOC and of the deepforest tiles."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = filename
    if database:
        ET.SubElement(ET.SubElement(root, "source"), "database").text = database
    size = ET.SubElement(root, "size")
    for tag, v in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(v)
    ET.SubElement(root, "segmented").text = str(int(segmented))
    for o in objects:
        el = ET.SubElement(root, "object")
        ET.SubElement(el, "name").text = o["name"]
        ET.SubElement(el, "pose").text = "Unspecified"
        ET.SubElement(el, "truncated").text = "0"
        ET.SubElement(el, "difficult").text = str(int(o["difficult"]))
        box = ET.SubElement(el, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), o["bbox"]):
            ET.SubElement(box, tag).text = str(int(round(v)))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8")


def read_voc_annotation(path: Path) -> Dict:
    """Parse one VOC XML: filename, width, height, objects [{name, bbox (xmin, ymin, xmax, ymax), difficult}]."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise DataError(f"{path}: malformed VOC annotation XML ({e})") from None
    try:
        out = {"filename": root.findtext("filename"), "width": int(root.findtext("size/width")),
               "height": int(root.findtext("size/height")), "objects": []}
        for obj in root.iter("object"):
            box = obj.find("bndbox")
            bbox = tuple(float(box.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
            difficult = (obj.findtext("difficult") or "0").strip() or "0"  # labelme writes <difficult/>
            out["objects"].append({"name": obj.findtext("name").strip(), "bbox": bbox,
                                   "difficult": bool(int(difficult))})
    except (TypeError, ValueError, AttributeError):
        raise DataError(f"{path}: VOC annotation lacks size/width, size/height or an object's name/bndbox "
                        "(xmin, ymin, xmax, ymax as numbers)") from None
    return out


class VOCClassification:
    """A VOC split as a multi-label classification dataset: ``(image, target)`` with 1/-1/0 per class."""

    def __init__(self, root: Path, split: str, classes: Sequence[str] = VOC_CLASSES,
                 transform: Optional[Callable] = None):
        self.root = Path(root)
        self.split = split
        self.classes = list(classes)
        self.transform = transform
        self.ids = read_image_set(self.root, split)
        self.images = [self.root / "JPEGImages" / f"{i}.jpg" for i in self.ids]
        self.targets = read_class_labels(self.root, split, self.classes, self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        img = load_rgb(self.images[index])
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]
