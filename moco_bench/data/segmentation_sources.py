"""Sources of the semantic segmentation transfer, listed and checked before any training (no detectron2 here).

Two formats::

    voc_2012_train_aug: {format: voc_seg, root: ${datasets:VOC2012}, split: train_aug,
                         labels: SegmentationClassAug, ignore_label: 255}
    cityscapes_fine_sem_seg_val: {format: cityscapes_sem, image_dir: .../leftImg8bit/val, gt_dir: .../gtFine/val,
                                  ignore_label: 255}

``voc_seg`` reads ``ImageSets/Segmentation/<split>.txt`` in a VOC year folder: one image id per line (VOC's own
lists; ``train_aug.txt`` of the SBD-augmented set, as mmsegmentation writes it) with labels in the ``labels``
folder, or DeepLab's ``/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png`` pairs (as the SBD-converted
``SegmentationClassAug`` copies ship ``train_aug.txt``). ``cityscapes_sem`` pairs each ``leftImg8bit`` image with
its ``labelTrainIds`` PNG, as detectron2's Cityscapes loader does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

from moco_bench.core.errors import ConfigError, DataError, DatasetNotFound
from moco_bench.data.listing import fingerprint, relative_names

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


def pairs_of(spec: Mapping) -> List[Tuple[Path, Path]]:
    """(image, label PNG) pairs of a source, in the order its loader reads them."""
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
        pairs = pairs_of(spec)
        absent = [str(p) for pair in pairs for p in pair if not p.is_file()]
        if absent:
            hint = " (run cityscapesscripts' csCreateTrainIdLabelImgs)" if "labelTrainIds" in absent[0] else ""
            raise DataError(f"{source}: datasets.sources.{name}: {len(absent)} files missing{hint}, e.g. {absent[0]}")
        if spec.get("expect") is not None and len(pairs) != int(spec["expect"]):
            raise DataError(f"{source}: datasets.sources.{name} lists {len(pairs)} images, but the published split has "
                            f"{int(spec['expect'])}: a partial or different copy")
        base = spec["root"] if spec["format"] == "voc_seg" else spec["image_dir"]
        summary[name] = {"images": len(pairs), "fingerprint": fingerprint(relative_names([i for i, _ in pairs], base))}
    return summary

