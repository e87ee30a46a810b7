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
"""

from __future__ import annotations

import json
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

FORMATS = ("voc", "coco")
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
