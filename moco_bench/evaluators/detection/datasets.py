"""Datasets of the detection transfer, registered in detectron2's catalogs from the evaluation config.

A config names its training and test sets and describes each under ``datasets.sources``::

    datasets:
      classes: [aeroplane, ...]                  # VOC sources: class names, in label order
      train: [voc_2007_trainval, voc_2012_trainval]
      test: [voc_2007_test]
      sources:
        voc_2007_trainval: {format: voc, root: ${datasets:VOC2007}, split: trainval, year: 2007}
        coco_2017_val: {format: coco, json: .../instances_val2017.json, image_root: .../val2017}
        lvis_v0.5_val: {format: lvis, json: .../lvis_v0.5_val.json, image_root: ${datasets:coco}}
        cityscapes_fine_instance_seg_val: {format: cityscapes, image_dir: .../leftImg8bit/val, gt_dir: .../gtFine/val}

detectron2 registers its builtin names (``voc_2007_test``, ``coco_2017_train`` ...) at import under
``$DETECTRON2_DATASETS``; the same names are registered again here under the moco-bench datasets root, so the
paths in the result's config are the paths that were read. Custom folders (the embedded mini-VOC and
mini-COCO, any VOCdevkit or COCO-JSON folder) are registered the same way under their own names. LVIS and
Cityscapes sources are read by detectron2's own loaders (``load_lvis_json`` with the ``lvis`` API;
``load_cityscapes_instances`` from the gtFine polygons, as its builtin Cityscapes names do) and evaluated by
LVISEvaluator and the official Cityscapes instance evaluation.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import List, Mapping, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances, register_pascal_voc
from detectron2.data.datasets.builtin_meta import (
    COCO_PERSON_KEYPOINT_FLIP_MAP,
    COCO_PERSON_KEYPOINT_NAMES,
    KEYPOINT_CONNECTION_RULES,
)

from moco_bench.core.errors import ConfigError, DataError

COCO_PERSON = {"keypoint_names": COCO_PERSON_KEYPOINT_NAMES, "keypoint_flip_map": COCO_PERSON_KEYPOINT_FLIP_MAP,
               "keypoint_connection_rules": KEYPOINT_CONNECTION_RULES}  # what detectron2's builtin names carry


@lru_cache(maxsize=8)
def _coco_categories(json_path: str) -> List[dict]:
    return json.loads(Path(json_path).read_text()).get("categories", [])


def dataset_shape(spec: Mapping, classes: Sequence[str] | None) -> Tuple[int, int]:
    """(number of classes, number of keypoints) of a training source, read without registering it."""
    if spec["format"] == "voc":
        if not classes:
            raise ConfigError("a VOC training set needs datasets.classes (its class names, in label order)")
        return len(classes), 0
    if spec["format"] == "cityscapes":
        return len(cityscapes_things()), 0
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
        REGISTER[spec["format"]](name, spec, classes)


def _register_voc(name: str, spec: Mapping, classes: Sequence[str] | None) -> None:
    if not classes:
        raise ConfigError(f"datasets.sources.{name} is a VOC folder: datasets.classes must list its classes")
    register_pascal_voc(name, str(spec["root"]), str(spec["split"]), int(spec["year"]), list(classes))
    MetadataCatalog.get(name).evaluator_type = "pascal_voc"  # as detectron2's builtin VOC names have


def _register_coco(name: str, spec: Mapping, classes: Sequence[str] | None) -> None:
    register_coco_instances(name, _keypoint_metadata(name, spec), str(spec["json"]), str(spec["image_root"]))


def _register_lvis(name: str, spec: Mapping, classes: Sequence[str] | None) -> None:
    """detectron2's LVIS loader under any name: class names from the JSON (detectron2's builtin metadata exists
    only for its own names and the 1230 LVIS v0.5 categories; the real JSON's names are the same). Image paths are
    ``image_root`` + the last two parts of each image's ``coco_url``."""
    from detectron2.data.datasets.lvis import load_lvis_json

    json_file, image_root = str(spec["json"]), str(spec["image_root"])
    image_root = os.path.join(image_root, "")  # detectron2 appends the coco_url folder to the root as text
    categories = sorted(_coco_categories(json_file), key=lambda c: c["id"])
    if [c["id"] for c in categories] != list(range(1, len(categories) + 1)):
        raise DataError(f"{json_file}: LVIS category ids must be 1..{len(categories)} (LVISEvaluator maps them so)")
    DatasetCatalog.register(name, lambda: load_lvis_json(json_file, image_root, None))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="lvis",
                                  thing_classes=[c.get("synonyms", [c["name"]])[0] for c in categories])


def _register_cityscapes(name: str, spec: Mapping, classes: Sequence[str] | None) -> None:
    """As detectron2 registers its builtin ``cityscapes_fine_instance_seg_*`` names: the loader reads the gtFine
    polygons (``from_json``); the official evaluation reads ``gt_dir``'s instanceIds PNGs."""
    from detectron2.data.datasets.cityscapes import load_cityscapes_instances

    image_dir, gt_dir = str(spec["image_dir"]), str(spec["gt_dir"])
    DatasetCatalog.register(name, lambda: load_cityscapes_instances(image_dir, gt_dir, from_json=True,
                                                                    to_polygons=True))
    MetadataCatalog.get(name).set(image_dir=image_dir, gt_dir=gt_dir, evaluator_type="cityscapes_instance",
                                  thing_classes=cityscapes_things())


def cityscapes_things() -> List[str]:
    """Cityscapes' instance classes in the order detectron2's loader numbers them (labels with instances that are
    evaluated: person, rider, car, truck, bus, train, motorcycle, bicycle)."""
    from cityscapesscripts.helpers.labels import labels

    return [label.name for label in labels if label.hasInstances and not label.ignoreInEval]


# Every detection source format (moco_bench.data.sources) and how detectron2's catalogs take it.
REGISTER = {"voc": _register_voc, "coco": _register_coco, "lvis": _register_lvis, "cityscapes": _register_cityscapes}
