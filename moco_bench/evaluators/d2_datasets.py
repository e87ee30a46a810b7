"""Datasets of the detection transfer, registered in detectron2's catalogs from the evaluation config.

A config names its training and test sets and describes each under ``datasets.sources``::

    datasets:
      classes: [aeroplane, ...]                  # VOC sources: class names, in label order
      train: [voc_2007_trainval, voc_2012_trainval]
      test: [voc_2007_test]
      sources:
        voc_2007_trainval: {format: voc, root: ${datasets:VOC2007}, split: trainval, year: 2007}
        coco_2017_val: {format: coco, json: .../instances_val2017.json, image_root: .../val2017}

detectron2 registers its builtin names (``voc_2007_test``, ``coco_2017_train`` ...) at import under
``$DETECTRON2_DATASETS``; the same names are registered again here under the moco-bench datasets root, so the
paths in the result's config are the paths that were read. Custom folders (the embedded mini-VOC and
mini-COCO, any VOCdevkit or COCO-JSON folder) are registered the same way under their own names.

Also here: :func:`build_deepforest_voc`, real aerial photographs with real tree boxes (PyPI's ``deepforest``
package, installed as data only) arranged as a VOCdevkit for tests and benchmarks.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple
from xml.etree import ElementTree as ET

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances, register_pascal_voc
from detectron2.data.datasets.builtin_meta import (
    COCO_PERSON_KEYPOINT_FLIP_MAP,
    COCO_PERSON_KEYPOINT_NAMES,
    KEYPOINT_CONNECTION_RULES,
)
from PIL import Image

from moco_bench.data import embedded
from moco_bench.data.voc import read_image_set, read_voc_annotation
from moco_bench.errors import ConfigError, DataError, DatasetNotFound

FORMATS = ("voc", "coco")
COCO_PERSON = {"keypoint_names": COCO_PERSON_KEYPOINT_NAMES, "keypoint_flip_map": COCO_PERSON_KEYPOINT_FLIP_MAP,
               "keypoint_connection_rules": KEYPOINT_CONNECTION_RULES}  # what detectron2's builtin names carry


def check_sources(sources: Mapping[str, Mapping], source: str = "config") -> None:
    """Fail before training when a dataset is absent: one :class:`DatasetNotFound` naming every missing folder."""
    missing = []
    for name, spec in sources.items():
        fmt = spec.get("format")
        if fmt not in FORMATS:
            raise ConfigError(f"{source}: datasets.sources.{name}.format is {fmt!r}; expected one of {FORMATS}")
        if fmt == "voc":
            try:
                read_image_set(Path(spec["root"]), str(spec["split"]))
            except DatasetNotFound as e:
                missing.append(f"{name}: {e}")
        else:
            for key, kind in (("json", "annotation file"), ("image_root", "image folder")):
                if not Path(spec[key]).exists():
                    missing.append(f"{name}: COCO {kind} {spec[key]} not found")
    if missing:
        raise DatasetNotFound("detection datasets missing (" + "; ".join(missing) + "). Real datasets live under "
                              "$MOCO_BENCH_DATASETS laid out as detectron2's DETECTRON2_DATASETS (VOC2007/, VOC2012/, "
                              "coco/annotations + coco/train2017, val2017); embedded ones are built by "
                              "`moco-bench data build minivoc|minicoco`")


@lru_cache(maxsize=8)
def _coco_categories(json_path: str) -> List[dict]:
    return json.loads(Path(json_path).read_text()).get("categories", [])


def dataset_shape(spec: Mapping, classes: Sequence[str] | None) -> Tuple[int, int]:
    """(number of classes, number of keypoints) of a training source, read without registering it."""
    if spec["format"] == "voc":
        if not classes:
            raise ConfigError("a VOC training set needs datasets.classes (its class names, in label order)")
        return len(classes), 0
    keypoints = _keypoint_metadata("train", spec).get("keypoint_names", [])
    return len(_coco_categories(str(spec["json"]))), len(keypoints)


def _keypoint_metadata(name: str, spec: Mapping) -> dict:
    """``keypoints: coco_person`` takes detectron2's COCO person metadata; ``keypoints: {flip: [[a, b]]}`` reads the
    names from the JSON's categories (``keypoints`` list) and pairs them for horizontal-flip augmentation."""
    kp = spec.get("keypoints")
    if not kp:
        return {}
    if kp == "coco_person":
        return dict(COCO_PERSON)
    names = next((c["keypoints"] for c in _coco_categories(str(spec["json"])) if c.get("keypoints")), None)
    if not names:
        raise DataError(f"{spec['json']}: no category lists 'keypoints', but datasets.sources.{name}.keypoints is set")
    flip = [tuple(pair) for pair in kp.get("flip", [])]
    unknown = sorted({n for pair in flip for n in pair} - set(names))
    if unknown:
        raise ConfigError(f"datasets.sources.{name}.keypoints.flip names {unknown}, not keypoints of {spec['json']}")
    return {"keypoint_names": list(names), "keypoint_flip_map": flip}


def register_sources(sources: Mapping[str, Mapping], classes: Sequence[str] | None) -> None:
    """(Re-)register every source in detectron2's DatasetCatalog and MetadataCatalog (in each worker process)."""
    for name, spec in sources.items():
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        if spec["format"] == "voc":
            if not classes:
                raise ConfigError(f"datasets.sources.{name} is a VOC folder: datasets.classes must list its classes")
            register_pascal_voc(name, str(spec["root"]), str(spec["split"]), int(spec["year"]), list(classes))
            MetadataCatalog.get(name).evaluator_type = "pascal_voc"  # as detectron2's builtin VOC names have
        else:
            register_coco_instances(name, _keypoint_metadata(name, spec), str(spec["json"]), str(spec["image_root"]))


def _deepforest_data() -> Path:
    spec = importlib.util.find_spec("deepforest")  # locates the package without importing (running) it
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFound("deepforest's data folder not found: install it as data only with "
                              "`.venv/bin/pip install --no-deps deepforest` (it is never imported)")
    return Path(spec.submodule_search_locations[0]) / "data"


def _voc_xml(name: str, size: int, boxes: List[tuple]) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = name
    sz = ET.SubElement(root, "size")
    for tag, v in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(sz, tag).text = str(v)
    for label, box in boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = label
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        bb = ET.SubElement(obj, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bb, tag).text = str(int(round(v)))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8")


def _write_deepforest(tmp: Path, images: Sequence[str], tile: int, test_tiles: Sequence[Sequence[int]],
                      min_visible: float, label: str | None) -> None:
    src = _deepforest_data()
    voc = tmp / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    splits: Dict[str, List[str]] = {"trainval": [], "test": []}
    for stem in images:
        png, xml = src / f"{stem}.png", src / f"{stem}.xml"
        if not png.is_file() or not xml.is_file():
            raise DatasetNotFound(f"{src}: expected deepforest's {png.name} and {xml.name}")
        image = Image.open(png).convert("RGB")
        objects = read_voc_annotation(xml)["objects"]
        for r in range(image.height // tile):
            for c in range(image.width // tile):
                x0, y0 = c * tile, r * tile
                boxes = []
                for o in objects:  # VOC pixel coordinates are 1-based and inclusive
                    xmin, ymin, xmax, ymax = o["bbox"]
                    cx = (max(xmin, x0 + 1), max(ymin, y0 + 1), min(xmax, x0 + tile), min(ymax, y0 + tile))
                    area = (xmax - xmin + 1) * (ymax - ymin + 1)
                    if cx[2] > cx[0] and cx[3] > cx[1] and \
                            (cx[2] - cx[0] + 1) * (cx[3] - cx[1] + 1) >= min_visible * area:
                        boxes.append((label or o["name"], (cx[0] - x0, cx[1] - y0, cx[2] - x0, cx[3] - y0)))
                tile_id = f"{stem}_{r}{c}"
                image.crop((x0, y0, x0 + tile, y0 + tile)).save(voc / "JPEGImages" / f"{tile_id}.jpg", quality=95)
                (voc / "Annotations" / f"{tile_id}.xml").write_bytes(_voc_xml(f"{tile_id}.jpg", tile, boxes))
                splits["test" if [r, c] in [list(t) for t in test_tiles] else "trainval"].append(tile_id)
    for split, ids in splits.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))


def build_deepforest_voc(out: Path, images: Sequence[str] = ("OSBS_029", "SOAP_061"), tile: int = 200,
                         test_tiles: Sequence[Sequence[int]] = ((1, 1),), min_visible: float = 0.5,
                         label: str | None = "Tree") -> Path:
    """deepforest's aerial images (real tree crowns, VOC XML boxes) cut into ``tile`` px tiles as a VOCdevkit.

    Each 400 px image gives a 2x2 grid of 200 px tiles; the tiles at ``test_tiles`` (row, col) of every image form
    the test split, the rest trainval. A box cut by a tile border is kept, clipped, when at least ``min_visible``
    of it is inside the tile. ``label`` names every box (OSBS_029 says ``Tree``, SOAP_061 ``Alive``/``Dead``: all
    are tree crowns); None keeps the file's names. Returns ``out/VOCdevkit/VOC2007``, built once: other options in
    the same folder are refused, as for every embedded dataset.
    """
    options = {"kind": "deepforest", "images": list(images), "tile": tile,
               "test_tiles": [list(t) for t in test_tiles], "min_visible": min_visible, "label": label}
    out = embedded.build_once(Path(out), options, _write_deepforest)
    return out / "VOCdevkit" / "VOC2007"
