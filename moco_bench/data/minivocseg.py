"""An embedded mini-VOC2012 segmentation set: Fashion-MNIST scenes with class label PNGs in VOC's layout and
the SBD-augmented ``train_aug`` layout semantic segmentation trains on::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png      # palette PNG: 0 background, 1..C classes, 255 void
    VOCdevkit/VOC2012/SegmentationObject/<id>.png     # palette PNG: instance index, 255 void
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
    VOCdevkit/VOC2012/SegmentationClassAug/<id>.png   # greyscale PNG of label indices (SBD-converted; no void band)
    VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt   # train + the extra (SBD) images, val left out

As in VOC, the class PNGs mark a void band (255) along every object boundary; the SBD-converted labels do not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image

from moco_bench.data import fashion_mnist
from moco_bench.data.builds import build_once
from moco_bench.data.scenes import paste_items, pick_items

VOID = 255


def voc_palette() -> List[int]:
    """VOC's colour map: label bits spread over the high bits of R, G, B (the devkit's ``labelcolormap``)."""
    palette = []
    for label in range(256):
        r = g = b = 0
        bits = label
        for shift in range(8):
            r |= (bits & 1) << (7 - shift)
            g |= ((bits >> 1) & 1) << (7 - shift)
            b |= ((bits >> 2) & 1) << (7 - shift)
            bits >>= 3
        palette += [r, g, b]
    return palette


def void_band(labels: np.ndarray) -> np.ndarray:
    """Pixels next to a pixel of another label (4-neighbourhood): VOC's void boundary."""
    edge = np.zeros(labels.shape, dtype=bool)
    for axis in (0, 1):
        diff = np.diff(labels, axis=axis) != 0
        if axis == 0:
            edge[1:] |= diff
            edge[:-1] |= diff
        else:
            edge[:, 1:] |= diff
            edge[:, :-1] |= diff
    return edge


def _save_palette(array: np.ndarray, path: Path) -> None:
    image = Image.fromarray(array.astype(np.uint8)).convert("P")
    image.putpalette(voc_palette())
    image.save(path)


def _write_image(voc: Path, image_id: str, img: np.ndarray, objects: List[Dict], class_png: bool) -> None:
    classes = np.zeros(img.shape, dtype=np.uint8)
    instances = np.zeros(img.shape, dtype=np.uint8)
    for k, obj in enumerate(objects, start=1):
        classes[obj["mask"]] = obj["label"] + 1
        instances[obj["mask"]] = k
    Image.fromarray(img).convert("RGB").save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
    Image.fromarray(classes).save(voc / "SegmentationClassAug" / f"{image_id}.png")
    if class_png:
        band = void_band(classes)
        _save_palette(np.where(band, VOID, classes), voc / "SegmentationClass" / f"{image_id}.png")
        _save_palette(np.where(band, VOID, instances), voc / "SegmentationObject" / f"{image_id}.png")


def _write_minivocseg(tmp: Path, *, n_train: int, n_val: int, n_extra: int, canvas: List[int], items: int,
                      scale: List[float], seed: int) -> None:
    rng = np.random.default_rng(seed)
    voc = tmp / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject", "SegmentationClassAug",
                "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    splits: Dict[str, List[str]] = {"train": [], "val": [], "extra": []}
    counter = 0
    for split, source, n in (("train", "train", n_train), ("val", "test", n_val), ("extra", "train", n_extra)):
        pool, labels = fashion_mnist.load(source)
        for _ in range(n):
            counter += 1
            image_id = f"2012_{counter:06d}"
            img = rng.integers(0, 24, size=tuple(canvas), dtype=np.uint8)
            picked = pick_items(rng, labels, int(rng.integers(1, items + 1)))
            objects = paste_items(rng, img, pool[picked], labels[picked], scale)
            _write_image(voc, image_id, img, objects, class_png=split != "extra")  # SBD images: Aug labels only
            splits[split].append(image_id)
    lists = {"train": splits["train"], "val": splits["val"], "trainval": splits["train"] + splits["val"],
             "train_aug": sorted(splits["train"] + splits["extra"])}
    for name, ids in lists.items():
        (voc / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))


def build_minivocseg(out: Path, *, n_train: int = 60, n_val: int = 40, n_extra: int = 60, canvas=(96, 128),
                     items: int = 3, scale=(1.0, 2.0), seed: int = 0, force: bool = False) -> Path:
    """Returns the ``VOCdevkit/VOC2012`` folder. ``n_extra``: images only in train_aug (SBD's share)."""
    opts = dict(kind="minivocseg", n_train=n_train, n_val=n_val, n_extra=n_extra, canvas=list(canvas), items=items,
                scale=list(scale), seed=seed)
    return build_once(out, opts, _write_minivocseg, force) / "VOCdevkit" / "VOC2012"
