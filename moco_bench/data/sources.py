"""Checks of the detection datasets a config names (``datasets.sources``: VOC, COCO, LVIS, Cityscapes), made before any
training: every folder and annotation file is there, each split holds its published number of images, every class of
a VOC test set has a ground-truth object (a class without one would score AP 0 and pull the mean down: a perfect
detector would read 90, not 100), and COCO annotations that name no image of their file are counted (detectron2
drops them with a line in its log; the result records how many).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

from moco_bench.core.errors import ConfigError, DataError, DatasetNotFound
from moco_bench.data.listing import fingerprint, relative_names
from moco_bench.data.voc import read_image_set, read_voc_annotation

log = logging.getLogger(__name__)
FORMATS = ("voc", "coco", "lvis", "cityscapes")
PATHS = {"coco": (("json", "annotation file"), ("image_root", "image folder")),
         "lvis": (("json", "annotation file"), ("image_root", "image folder")),
         "cityscapes": (("image_dir", "leftImg8bit folder"), ("gt_dir", "gtFine folder"))}


def cityscapes_images(image_dir: Path) -> List[Path]:
    """``<city>/*_leftImg8bit.png`` under a Cityscapes split folder, as detectron2's loader lists them."""
    return sorted(Path(image_dir).glob("*/*_leftImg8bit.png"))


def _missing(name: str, spec: Mapping) -> list:
    fmt = spec["format"]
    if fmt == "voc":
        try:
            read_image_set(Path(spec["root"]), str(spec["split"]))
        except DatasetNotFound as e:
            return [f"{name}: {e}"]
        return []
    return [f"{name}: {fmt} {kind} {spec[key]} not found" for key, kind in PATHS[fmt] if not Path(spec[key]).exists()]


def _summary(name: str, spec: Mapping, classes: Sequence[str] | None, test: Sequence[str]) -> dict:
    if spec["format"] == "voc":
        return _voc_summary(spec, classes, name in test)
    if spec["format"] == "cityscapes":
        images = cityscapes_images(Path(spec["image_dir"]))
        return {"images": len(images), "fingerprint": fingerprint(relative_names(images, spec["image_dir"]))}
    return _coco_summary(spec)  # COCO and LVIS JSON alike


def _voc_summary(spec: Mapping, classes: Sequence[str] | None, is_test: bool) -> dict:
    root, ids = Path(spec["root"]), read_image_set(Path(spec["root"]), str(spec["split"]))
    summary = {"images": len(ids), "fingerprint": fingerprint(ids)}
    if is_test and classes:
        objects = Counter(o["name"] for i in ids for o in read_voc_annotation(root / "Annotations" / f"{i}.xml")
                          ["objects"] if not o["difficult"])
        summary["objects_per_class"] = {c: objects.get(c, 0) for c in classes}
    return summary


def _coco_summary(spec: Mapping) -> dict:
    try:
        doc = json.loads(Path(spec["json"]).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{spec['json']}: not a COCO JSON ({e})") from None
    images = doc.get("images", [])
    ids = {img["id"] for img in images}
    orphans = sum(1 for ann in doc.get("annotations", []) if ann.get("image_id") not in ids)
    return {"images": len(ids), "fingerprint": fingerprint(str(img.get("file_name")) for img in images),
            "annotations_without_image": orphans}


def check_sources(sources: Mapping[str, Mapping], test: Sequence[str], classes: Sequence[str] | None,
                  source: str = "config") -> Dict[str, dict]:
    """Fail before training on a missing, partial or class-less dataset; returns per source its image count
    (and, for COCO, the annotations that name no image; for a VOC test set, the objects per class)."""
    for name, spec in sources.items():
        if spec.get("format") not in FORMATS:
            raise ConfigError(f"{source}: datasets.sources.{name}.format is {spec.get('format')!r}; expected one "
                              f"of {FORMATS}")
    missing = [m for name, spec in sources.items() for m in _missing(name, spec)]
    if missing:
        raise DatasetNotFound("detection datasets missing (" + "; ".join(missing) + "). Real datasets live under "
                              "$MOCO_BENCH_DATASETS laid out as detectron2's DETECTRON2_DATASETS (VOC2007/, VOC2012/, "
                              "coco/annotations + coco/train2017, val2017, lvis/, cityscapes/leftImg8bit + gtFine); "
                              "embedded ones are built by `moco-bench data build minivoc|minicoco|minilvis|"
                              "minicityscapes`")
    summary = {name: _summary(name, spec, classes, test) for name, spec in sources.items()}
    for name, spec in sources.items():
        where, n = spec.get("root", spec.get("json", spec.get("image_dir"))), summary[name]["images"]
        if spec.get("expect") is not None and n != int(spec["expect"]):
            raise DataError(f"{source}: datasets.sources.{name} lists {n} images, but the published split has "
                            f"{int(spec['expect'])}: a partial or different copy ({where})")
        empty = [c for c, k in summary[name].get("objects_per_class", {}).items() if k == 0]
        if empty:
            raise DataError(f"{source}: test set {name} ({where}) has no ground-truth object of class(es) "
                            f"{', '.join(empty)}; their AP would be 0 and count in the mean")
        if summary[name].get("annotations_without_image"):
            log.warning("%s: %d annotation(s) name no image of %s; detectron2 drops them", source,
                        summary[name]["annotations_without_image"], spec["json"])
    return summary
