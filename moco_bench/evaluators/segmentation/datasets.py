"""Datasets of the semantic segmentation transfer, registered in detectron2's catalogs from the config (the
sources' formats, listing and checks: :mod:`moco_bench.data.segmentation_sources`). Every label PNG holds class
indices; ``ignore_label`` marks unlabelled pixels (VOC's void, Cityscapes' train id 255). ``cityscapes_sem`` is
read by detectron2's own Cityscapes loader (``labelTrainIds`` PNGs, which cityscapesscripts'
``csCreateTrainIdLabelImgs`` writes).
"""

from __future__ import annotations

from typing import Callable, List, Mapping, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from moco_bench.core.errors import ConfigError
from moco_bench.data.segmentation_sources import pairs_of


def cityscapes_stuff() -> List[str]:
    """Cityscapes' 19 evaluated classes in train-id order (cityscapesscripts' labels)."""
    from cityscapesscripts.helpers.labels import labels

    named = sorted((label.trainId, label.name) for label in labels if 0 <= label.trainId < 255)
    return [name for _, name in named]


def class_names(spec: Mapping, classes: Sequence[str] | None) -> List[str]:
    """The classes of a source, in label order: the config's (VOC: background first) or Cityscapes' own."""
    if classes:
        return list(classes)
    if spec["format"] == "cityscapes_sem":
        return cityscapes_stuff()
    raise ConfigError("a voc_seg source needs datasets.classes (its class names in label order, background first)")


def register_sources(sources: Mapping[str, Mapping], classes: Sequence[str] | None) -> None:
    """(Re-)register every source in detectron2's catalogs with what SemSegEvaluator reads: ``stuff_classes``,
    ``ignore_label``; the records carry ``file_name`` and ``sem_seg_file_name``."""
    for name, spec in sources.items():
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, REGISTER[spec["format"]](spec))
        MetadataCatalog.get(name).set(stuff_classes=class_names(spec, classes), ignore_label=int(spec["ignore_label"]),
                                      evaluator_type="sem_seg")


def _voc_seg_records(spec: Mapping) -> Callable[[], List[dict]]:
    pairs = [(str(i), str(label)) for i, label in pairs_of(spec)]
    return lambda: [{"file_name": i, "sem_seg_file_name": s} for i, s in pairs]


def _cityscapes_records(spec: Mapping) -> Callable[[], List[dict]]:
    from detectron2.data.datasets.cityscapes import load_cityscapes_semantic

    image_dir, gt_dir = str(spec["image_dir"]), str(spec["gt_dir"])
    return lambda: load_cityscapes_semantic(image_dir, gt_dir)


# Every segmentation source format (moco_bench.data.segmentation_sources): its records loader for detectron2.
REGISTER = {"voc_seg": _voc_seg_records, "cityscapes_sem": _cityscapes_records}
