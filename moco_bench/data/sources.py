"""The detection source formats (``datasets.sources.<name>.format``: voc, coco, lvis, cityscapes): the schema of
each entry, what is missing, and what a present source holds (its image count and fingerprint; for a VOC test set
the objects per class, for COCO JSON the annotations that name no image of their file). The checks on top of
these (published counts, classes without a ground-truth object) are :func:`moco_bench.data.check.check_sources`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple

from moco_bench.core.errors import DataError, DatasetNotFound
from moco_bench.core.schema import MISSING, field
from moco_bench.data.listing import fingerprint, relative_names
from moco_bench.data.registry import SourceFormat, register_source
from moco_bench.data.voc import read_image_set, read_voc_annotation


@dataclass
class VOCSource:
    format: str = MISSING
    root: str = MISSING  # a VOCdevkit year folder
    split: str = MISSING  # ImageSets/Main/<split>.txt
    year: int = field(choices=(2007, 2012))
    expect: Optional[int] = field(None, min=1)  # the published image count of the split


@dataclass
class COCOSource:
    format: str = MISSING
    json: str = MISSING
    image_root: str = MISSING
    keypoints: Any = None  # coco_person, or {flip: [[left, right], ...]} with names from the JSON
    expect: Optional[int] = field(None, min=1)


@dataclass
class LVISSource:
    format: str = MISSING
    json: str = MISSING
    image_root: str = MISSING  # the COCO root: images are <image_root>/<last two parts of coco_url>
    expect: Optional[int] = field(None, min=1)


@dataclass
class CityscapesSource:
    format: str = MISSING
    image_dir: str = MISSING  # leftImg8bit/<split>
    gt_dir: str = MISSING  # gtFine/<split>
    expect: Optional[int] = field(None, min=1)


def cityscapes_images(image_dir: Path) -> List[Path]:
    """``<city>/*_leftImg8bit.png`` under a Cityscapes split folder, as detectron2's loader lists them."""
    return sorted(Path(image_dir).glob("*/*_leftImg8bit.png"))


def _paths_missing(*keys: Tuple[str, str]) -> Callable[[str, Mapping], List[str]]:
    def missing(name: str, spec: Mapping) -> List[str]:
        return [f"{name}: {spec['format']} {kind} {spec[key]} not found" for key, kind in keys
                if not Path(spec[key]).exists()]
    return missing


def _voc_missing(name: str, spec: Mapping) -> List[str]:
    try:
        read_image_set(Path(spec["root"]), str(spec["split"]))
    except DatasetNotFound as e:
        return [f"{name}: {e}"]
    return []


def _voc_summary(name: str, spec: Mapping, classes: Sequence[str] | None, is_test: bool) -> dict:
    root, ids = Path(spec["root"]), read_image_set(Path(spec["root"]), str(spec["split"]))
    summary = {"images": len(ids), "fingerprint": fingerprint(ids)}
    if is_test and classes:
        objects = Counter(o["name"] for i in ids for o in read_voc_annotation(root / "Annotations" / f"{i}.xml")
                          ["objects"] if not o["difficult"])
        summary["objects_per_class"] = {c: objects.get(c, 0) for c in classes}
    return summary


def _coco_summary(name: str, spec: Mapping, classes: Sequence[str] | None, is_test: bool) -> dict:
    """COCO and LVIS JSON alike."""
    try:
        doc = json.loads(Path(spec["json"]).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{spec['json']}: not a COCO JSON ({e})") from None
    images = doc.get("images", [])
    ids = {img["id"] for img in images}
    orphans = sum(1 for ann in doc.get("annotations", []) if ann.get("image_id") not in ids)
    return {"images": len(ids), "fingerprint": fingerprint(str(img.get("file_name")) for img in images),
            "annotations_without_image": orphans}


def _cityscapes_summary(name: str, spec: Mapping, classes: Sequence[str] | None, is_test: bool) -> dict:
    images = cityscapes_images(Path(spec["image_dir"]))
    return {"images": len(images), "fingerprint": fingerprint(relative_names(images, spec["image_dir"]))}


JSON_PATHS = (("json", "annotation file"), ("image_root", "image folder"))
register_source("voc", SourceFormat(VOCSource, _voc_missing, _voc_summary, "detection", ("root",)))
register_source("coco", SourceFormat(COCOSource, _paths_missing(*JSON_PATHS), _coco_summary, "detection",
                                     ("json", "image_root")))
register_source("lvis", SourceFormat(LVISSource, _paths_missing(*JSON_PATHS), _coco_summary, "detection",
                                     ("json", "image_root")))
register_source("cityscapes", SourceFormat(
    CityscapesSource, _paths_missing(("image_dir", "leftImg8bit folder"), ("gt_dir", "gtFine folder")),
    _cityscapes_summary, "detection", ("image_dir", "gt_dir")))
