"""Datasets of the semantic segmentation transfer, registered in detectron2's catalogs from the config.

Two source formats::

    voc_2012_train_aug: {format: voc_seg, root: ${datasets:VOC2012}, split: train_aug,
                         labels: SegmentationClassAug, ignore_label: 255}
    cityscapes_fine_sem_seg_val: {format: cityscapes_sem, image_dir: .../leftImg8bit/val, gt_dir: .../gtFine/val,
                                  ignore_label: 255}

``voc_seg`` reads ``ImageSets/Segmentation/<split>.txt`` in a VOC year folder: one image id per line (VOC's own
lists; ``train_aug.txt`` of the SBD-augmented set, as mmsegmentation writes it) with labels in the ``labels``
folder, or DeepLab's ``/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png`` pairs (as the SBD-converted
``SegmentationClassAug`` copies ship ``train_aug.txt``). ``cityscapes_sem`` is detectron2's own Cityscapes loader
(``labelTrainIds`` PNGs, which cityscapesscripts' ``csCreateTrainIdLabelImgs`` writes). Every label PNG holds
class indices; ``ignore_label`` marks unlabelled pixels (VOC's void, Cityscapes' train id 255).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog

from moco_bench.core.errors import ConfigError, DataError, DatasetNotFound

FORMATS = ("voc_seg", "cityscapes_sem")


def voc_pairs(root: Path, split: str, labels: str) -> List[Tuple[Path, Path]]:
    """(image, label PNG) pairs of ``ImageSets/Segmentation/<split>.txt``, ids or DeepLab path pairs."""
    path = Path(root) / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not path.is_file():
        raise DatasetNotFound(f"{path}: segmentation split list not found (VOCdevkit/VOC2012 layout; train_aug.txt "
                              "comes with the SBD-augmented SegmentationClassAug labels)")
    pairs = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if len(parts) == 1:
            pairs.append((Path(root) / "JPEGImages" / f"{parts[0]}.jpg", Path(root) / labels / f"{parts[0]}.png"))
        elif len(parts) == 2:
            pairs.append(tuple(Path(root) / p.lstrip("/") for p in parts))
        elif parts:
            raise DataError(f"{path}:{lineno}: expected an image id or '<image> <label>' paths, got {line!r}")
    if not pairs:
        raise DataError(f"{path}: the split list is empty")
    return pairs


def cityscapes_stuff() -> List[str]:
    """Cityscapes' 19 evaluated classes in train-id order (cityscapesscripts' labels)."""
    from cityscapesscripts.helpers.labels import labels

    named = sorted((label.trainId, label.name) for label in labels if 0 <= label.trainId < 255)
    return [name for _, name in named]


def _files(spec: Mapping) -> List[Tuple[Path, Path]]:
    if spec["format"] == "voc_seg":
        return voc_pairs(Path(spec["root"]), str(spec["split"]), str(spec["labels"]))
    images = sorted(Path(spec["image_dir"]).glob("*/*_leftImg8bit.png"))
    if not Path(spec["image_dir"]).is_dir() or not images:
        raise DatasetNotFound(f"{spec['image_dir']}: no Cityscapes images (<city>/*_leftImg8bit.png)")
    gt = Path(spec["gt_dir"])
    return [(p, gt / p.parent.name / p.name.replace("leftImg8bit.png", "gtFine_labelTrainIds.png")) for p in images]


def check_sources(sources: Mapping[str, Mapping], test: Sequence[str] = (), classes: Sequence[str] | None = None,
                  source: str = "config") -> Dict[str, dict]:
    """Fail before training when a source is absent (:class:`DatasetNotFound`), misses a file, or holds another
    number of images than its published split (``expect``); returns each source's image count. (``test`` and
    ``classes``: the detection sources' signature; every label map is read as it is.)"""
    summary = {}
    for name, spec in sources.items():
        if spec.get("format") not in FORMATS:
            raise ConfigError(f"{source}: datasets.sources.{name}.format is {spec.get('format')!r}; expected one of "
                              f"{FORMATS}")
        if spec.get("ignore_label") is None:
            raise ConfigError(f"{source}: datasets.sources.{name} needs ignore_label (the label of unlabelled pixels)")
        pairs = _files(spec)
        absent = [str(p) for pair in pairs for p in pair if not p.is_file()]
        if absent:
            hint = " (run cityscapesscripts' csCreateTrainIdLabelImgs)" if "labelTrainIds" in absent[0] else ""
            raise DataError(f"{source}: datasets.sources.{name}: {len(absent)} files missing{hint}, e.g. {absent[0]}")
        if spec.get("expect") is not None and len(pairs) != int(spec["expect"]):
            raise DataError(f"{source}: datasets.sources.{name} lists {len(pairs)} images, but the published split has "
                            f"{int(spec['expect'])}: a partial or different copy")
        summary[name] = {"images": len(pairs)}
    return summary


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
    from detectron2.data.datasets.cityscapes import load_cityscapes_semantic

    for name, spec in sources.items():
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        if spec["format"] == "voc_seg":
            pairs = [(str(i), str(label)) for i, label in _files(spec)]
            DatasetCatalog.register(name, lambda p=pairs: [{"file_name": i, "sem_seg_file_name": s} for i, s in p])
        else:
            image_dir, gt_dir = str(spec["image_dir"]), str(spec["gt_dir"])
            DatasetCatalog.register(name, lambda i=image_dir, g=gt_dir: load_cityscapes_semantic(i, g))
        MetadataCatalog.get(name).set(stuff_classes=class_names(spec, classes), ignore_label=int(spec["ignore_label"]),
                                      evaluator_type="sem_seg")
