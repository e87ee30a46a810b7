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

from dataclasses import dataclass
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple

from moco_bench.core.errors import DataError, DatasetNotFound
from moco_bench.core.schema import MISSING, field
from moco_bench.data.listing import fingerprint, relative_names
from moco_bench.data.registry import SourceFormat, register_source


@dataclass
class VOCSegSource:
    format: str = MISSING
    root: str = MISSING  # a VOCdevkit year folder
    split: str = MISSING  # ImageSets/Segmentation/<split>.txt
    labels: str = MISSING  # the label PNG folder (SegmentationClass, SegmentationClassAug)
    ignore_label: int = field(min=0, max=255)  # the label of unlabelled pixels
    expect: Optional[int] = field(None, min=1)


@dataclass
class CityscapesSemSource:
    format: str = MISSING
    image_dir: str = MISSING  # leftImg8bit/<split>
    gt_dir: str = MISSING  # gtFine/<split>, with labelTrainIds PNGs
    ignore_label: int = field(min=0, max=255)
    expect: Optional[int] = field(None, min=1)


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


def _missing(name: str, spec: Mapping) -> List[str]:
    try:
        pairs_of(spec)
    except DatasetNotFound as e:
        return [f"{name}: {e}"]
    return []


def _summary(name: str, spec: Mapping, classes: Sequence[str] | None, is_test: bool) -> dict:
    """Every image and label file present; the image count and fingerprint."""
    pairs = pairs_of(spec)
    absent = [str(p) for pair in pairs for p in pair if not p.is_file()]
    if absent:
        hint = " (run cityscapesscripts' csCreateTrainIdLabelImgs)" if "labelTrainIds" in absent[0] else ""
        raise DataError(f"datasets.sources.{name}: {len(absent)} files missing{hint}, e.g. {absent[0]}")
    base = spec["root"] if spec["format"] == "voc_seg" else spec["image_dir"]
    return {"images": len(pairs), "fingerprint": fingerprint(relative_names([i for i, _ in pairs], base))}


register_source("voc_seg", SourceFormat(VOCSegSource, _missing, _summary, "segmentation", ("root",)))
register_source("cityscapes_sem", SourceFormat(CityscapesSemSource, _missing, _summary, "segmentation",
                                               ("image_dir", "gt_dir")))
