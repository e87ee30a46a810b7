"""Embedded datasets built from Fashion-MNIST, deterministically, in the real on-disk formats.

- ``imagefolder``: ``train/<class>/*.png`` and ``val/<class>/*.png`` (torchvision ImageFolder layout), and
  ``train_subset/``: the first ``subset_per_class`` train images of each class, hard links (the demo trains its
  linear heads there: the demo's 20,000 train images make an epoch of a linear protocol cost minutes on 2 cores).
- ``minivoc``: ``VOCdevkit/VOC2007`` with JPEGImages, Annotations (VOC XML, 1-based boxes, ``difficult``),
  ImageSets/Main/{train,val,trainval,test}.txt and ``<class>_<split>.txt`` (1 / -1 / 0). Each image is a
  dark canvas holding a few items; an item drawn faint is flagged difficult, as VOC flags hard objects.
- ``minicoco``: the same scenes as COCO instances JSON (``annotations/instances_{trainval,test}.json``):
  boxes, areas and RLE masks from the item pixels, and five keypoints per item (extremes and centroid) so
  the keypoint R-CNN pipeline has something real to learn.
- ``minilvis``, ``minicityscapes``, ``minivocseg``: segmentation sets in LVIS, Cityscapes and VOC2012 (+ SBD
  ``train_aug``) formats, in their own modules (:mod:`moco_bench.data.scenes` draws their scenes).

A build writes into a temporary folder and renames it into place with a ``.built.json`` manifest; asking
again with the same options does nothing, and asking with other options is an error rather than a silent
rebuild under existing feature caches.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Dict, List
from xml.etree import ElementTree as ET

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from moco_bench.core import paths
from moco_bench.core.errors import ConfigError, DataError
from moco_bench.core.progress import bar
from moco_bench.data import fashion_mnist
from moco_bench.data.builds import ITEM_THRESHOLD, MANIFEST, build_once
from moco_bench.data.deepforest import build_deepforest_voc
from moco_bench.data.minicityscapes import build_minicityscapes
from moco_bench.data.minilvis import build_minilvis
from moco_bench.data.minivocseg import build_minivocseg
from moco_bench.data.voc import voc_annotation_xml

FASHION_CLASSES = fashion_mnist.CLASSES
KEYPOINT_NAMES = ("top", "bottom", "left", "right", "center")
KEYPOINT_FLIP = (("left", "right"),)
DATABASE = "moco-bench embedded (Fashion-MNIST)"
NAMES = ("imagefolder", "minivoc", "minicoco", "deepforest", "minilvis", "minicityscapes", "minivocseg")
# Distinct colours per object index, black for 0, so the PNGs are viewable like VOC's own.
_PALETTE = [v for i in range(256) for v in ((i * 67) % 256, (i * 151) % 256, (i * 29) % 256)]


def _balanced_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    picked = []
    for c in range(len(FASHION_CLASSES)):
        idx = np.flatnonzero(labels == c)
        if per_class > len(idx):
            raise DataError(f"Fashion-MNIST has {len(idx)} images of class {c}, {per_class} were asked for")
        picked.append(rng.permutation(idx)[:per_class])
    return np.sort(np.concatenate(picked))


def _write_imagefolder(tmp: Path, *, train_per_class: int, val_per_class: int, size: int, seed: int,
                       subset_per_class: int) -> None:
    rng = np.random.default_rng(seed)
    for split, source, n in (("train", "train", train_per_class), ("val", "test", val_per_class)):
        images, labels = fashion_mnist.load(source)
        for i in bar(_balanced_indices(labels, n, rng), desc=f"imagefolder/{split}", leave=False):
            folder = tmp / split / FASHION_CLASSES[labels[i]]
            folder.mkdir(parents=True, exist_ok=True)
            im = Image.fromarray(images[i])
            if size != 28:
                im = im.resize((size, size), Image.BILINEAR)
            im.save(folder / f"{source}_{i:05d}.png")
    for folder in sorted((tmp / "train").iterdir()):  # the train images were drawn at random: the first are too
        (tmp / "train_subset" / folder.name).mkdir(parents=True)
        for png in sorted(folder.iterdir())[:subset_per_class]:
            _link(png, tmp / "train_subset" / folder.name / png.name)


def _place_items(rng, pool_images, pool_labels, canvas, items, scale):
    """Paste 1..items Fashion-MNIST items on a canvas; return the image and per-item records."""
    h, w = canvas
    img = rng.integers(0, 24, size=(h, w), dtype=np.uint8)  # a little texture, below ITEM_THRESHOLD
    objects = []
    for _ in range(rng.integers(1, items + 1)):
        j = rng.integers(len(pool_images))
        side = int(rng.integers(int(28 * scale[0]), int(28 * scale[1]) + 1))
        side = min(side, h, w)
        item = np.asarray(Image.fromarray(pool_images[j]).resize((side, side), Image.BILINEAR))
        faint = rng.random() < 0.1
        if faint:
            item = (item.astype(np.float32) * 0.45).astype(np.uint8)
        y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        region = img[y0:y0 + side, x0:x0 + side]
        np.maximum(region, item, out=region)
        full = np.zeros((h, w), dtype=bool)
        full[y0:y0 + side, x0:x0 + side] = item > (ITEM_THRESHOLD * (0.45 if faint else 1.0))
        if full.sum() < 4:
            continue
        objects.append({"label": int(pool_labels[j]), "mask": full, "difficult": bool(faint)})
    # Later items cover earlier ones: keep each item's visible pixels only.
    covered = np.zeros((h, w), dtype=bool)
    for obj in reversed(objects):
        obj["mask"] &= ~covered
        covered |= obj["mask"]
    return img, [o for o in objects if o["mask"].sum() >= 4]


def _box(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    return int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1  # VOC: 1-based, inclusive


def _write_minivoc(tmp: Path, *, n_trainval: int, n_test: int, canvas: List[int], items: int,
                   scale: List[float], seed: int) -> None:
    rng = np.random.default_rng(seed)
    voc = tmp / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main", "SegmentationObject"):
        (voc / sub).mkdir(parents=True)
    splits: Dict[str, List[str]] = {"trainval": [], "test": []}
    presence: Dict[str, Dict[str, int]] = {}
    counter = 0
    for split, source, n in (("trainval", "train", n_trainval), ("test", "test", n_test)):
        pool_images, pool_labels = fashion_mnist.load(source)
        for _ in bar(range(n), desc=f"minivoc/{split}", leave=False):
            counter += 1
            image_id = f"{counter:06d}"
            img, objects = _place_items(rng, pool_images, pool_labels, tuple(canvas), items, tuple(scale))
            for o in objects:
                o["bbox"] = _box(o["mask"])
            Image.fromarray(img).convert("RGB").save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
            named = [{"name": FASHION_CLASSES[o["label"]], "bbox": o["bbox"], "difficult": o["difficult"]}
                     for o in objects]
            (voc / "Annotations" / f"{image_id}.xml").write_bytes(voc_annotation_xml(
                f"{image_id}.jpg", canvas[1], canvas[0], named, database=DATABASE, segmented=True))
            instances = np.zeros(img.shape, dtype=np.uint8)  # VOC SegmentationObject: object index, 0 = none
            for k, o in enumerate(objects, start=1):
                instances[o["mask"]] = k
            seg = Image.fromarray(instances, mode="L").convert("P")
            seg.putpalette(_PALETTE)
            seg.save(voc / "SegmentationObject" / f"{image_id}.png")
            splits[split].append(image_id)
            labels = {}
            for o in objects:  # 1 if any non-difficult instance, 0 if only difficult ones (VOC convention)
                c = FASHION_CLASSES[o["label"]]
                labels[c] = max(labels.get(c, 0), 0 if o["difficult"] else 1)
            presence[image_id] = labels
    half = len(splits["trainval"]) // 2
    splits["train"], splits["val"] = splits["trainval"][:half], splits["trainval"][half:]
    main = voc / "ImageSets" / "Main"
    for split, ids in splits.items():
        (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for c in FASHION_CLASSES:
            lines = [f"{i} {presence[i].get(c, -1):2d}\n" for i in ids]
            (main / f"{c}_{split}.txt").write_text("".join(lines))


def _link(src: Path, dst: Path) -> None:
    """A hard link (no second copy of the bytes), or a copy where the file system has none."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _keypoints(mask: np.ndarray) -> List[float]:
    ys, xs = np.nonzero(mask)
    pts = [(xs[ys.argmin()], ys.min()), (xs[ys.argmax()], ys.max()), (xs.min(), ys[xs.argmin()]),
           (xs.max(), ys[xs.argmax()]), (xs.mean(), ys.mean())]
    out: List[float] = []
    for x, y in pts:
        out += [float(x) + 0.5, float(y) + 0.5, 2]
    return out


def _write_minicoco(tmp: Path, *, voc_root: Path) -> None:
    """COCO instances JSON of the mini-VOC scenes, masks read from VOC's SegmentationObject PNGs."""
    (tmp / "annotations").mkdir(parents=True)
    categories = [{"id": i + 1, "name": c, "supercategory": "fashion", "keypoints": list(KEYPOINT_NAMES),
                   "skeleton": [[1, 5], [2, 5], [3, 5], [4, 5]]} for i, c in enumerate(FASHION_CLASSES)]
    ann_id = 0
    for split in ("trainval", "test"):
        (tmp / split).mkdir()
        images, annotations = [], []
        ids = (voc_root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        for image_id in ids:
            src = voc_root / "JPEGImages" / f"{image_id}.jpg"
            _link(src, tmp / split / src.name)
            tree = ET.parse(voc_root / "Annotations" / f"{image_id}.xml").getroot()
            width, height = int(tree.findtext("size/width")), int(tree.findtext("size/height"))
            images.append({"id": int(image_id), "file_name": src.name, "width": width, "height": height})
            instances = np.asarray(Image.open(voc_root / "SegmentationObject" / f"{image_id}.png"))
            for k, obj in enumerate(tree.iter("object"), start=1):
                mask = instances == k
                ann_id += 1
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                x0, y0, x1, y1 = _box(mask)
                annotations.append({
                    "id": ann_id, "image_id": int(image_id),
                    "category_id": FASHION_CLASSES.index(obj.findtext("name")) + 1,
                    "bbox": [x0 - 1.0, y0 - 1.0, float(x1 - x0 + 1), float(y1 - y0 + 1)],
                    "area": float(mask_utils.area(rle)), "iscrowd": 0,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                    "keypoints": _keypoints(mask), "num_keypoints": len(KEYPOINT_NAMES),
                })
        doc = {"info": {"description": "moco-bench embedded mini-COCO (Fashion-MNIST scenes)"},
               "images": images, "annotations": annotations, "categories": categories, "licenses": []}
        (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))


def build_imagefolder(out: Path, *, train_per_class: int = 2000, val_per_class: int = 200, size: int = 32,
                      subset_per_class: int = 500, seed: int = 0, force: bool = False) -> Path:
    """``train_subset`` holds ``min(subset_per_class, train_per_class)`` images per class."""
    opts = dict(kind="imagefolder", train_per_class=train_per_class, val_per_class=val_per_class, size=size,
                subset_per_class=min(subset_per_class, train_per_class), seed=seed)
    return build_once(out, opts, _write_imagefolder, force)


def build_minivoc(out: Path, *, n_trainval: int = 300, n_test: int = 300, canvas=(96, 128), items: int = 3,
                  scale=(1.0, 2.0), seed: int = 0, force: bool = False) -> Path:
    """Returns the ``VOCdevkit/VOC2007`` folder."""
    opts = dict(kind="minivoc", n_trainval=n_trainval, n_test=n_test, canvas=list(canvas), items=items,
                scale=list(scale), seed=seed)
    return build_once(out, opts, _write_minivoc, force) / "VOCdevkit" / "VOC2007"


def build_minicoco(voc2007_dir: Path, out: Path, force: bool = False) -> Path:
    voc2007_dir = Path(voc2007_dir)
    voc_manifest = voc2007_dir.parent.parent / MANIFEST
    if not voc_manifest.is_file():
        raise DataError(f"{voc2007_dir}: not an embedded mini-VOC build (no {voc_manifest.name}); build minivoc first")
    opts = dict(kind="minicoco", voc=json.loads(voc_manifest.read_text()))
    return build_once(out, opts, lambda tmp, voc: _write_minicoco(tmp, voc_root=voc2007_dir), force)


def _builder(name: str) -> Callable:
    """The function whose keyword options ``build(name, ...)`` takes (minicoco: the mini-VOC it converts)."""
    builders = {"imagefolder": build_imagefolder, "minivoc": build_minivoc, "minicoco": build_minivoc,
                "deepforest": build_deepforest_voc, "minilvis": build_minilvis, "minicityscapes": build_minicityscapes,
                "minivocseg": build_minivocseg}
    if name not in builders:
        raise DataError(f"unknown embedded dataset {name!r}; known: {', '.join(NAMES)}")
    return builders[name]


OPTION_KINDS = ((bool, (bool,)), (int, (int,)), (float, (int, float)), ((list, tuple), (list, tuple)))  # bool first


def check_options(name: str, options: dict) -> None:
    """Refuse, naming the option, a key the builder does not take or a value of another kind than its default
    (``n_trainval=abc``)."""
    params = {p.name: p.default for p in inspect.signature(_builder(name)).parameters.values()
              if p.default is not inspect.Parameter.empty and p.name != "force"}
    for key, value in options.items():
        if key not in params:
            raise ConfigError(f"embedded dataset {name}: unknown option {key!r}; options: {', '.join(params)}")
        default = params[key]
        kinds = next((k for t, k in OPTION_KINDS if isinstance(default, t)), ())
        if kinds and (not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool))):
            raise ConfigError(f"embedded dataset {name}: option {key}={value!r} should be like its default "
                              f"{default!r} ({kinds[0].__name__})")


def build(name: str, root: Path | None = None, force: bool = False, **options) -> Path:
    """Build embedded dataset ``name`` under ``root`` (default: the cache's ``embedded/``); returns its path."""
    root = Path(root) if root is not None else paths.data_cache() / "embedded"
    check_options(name, options)
    fn = _builder(name)
    if name == "minicoco":
        return build_minicoco(fn(root / "minivoc", **options), root / "minicoco", force=force)
    if name == "deepforest":  # a fixed set of real tiles: nothing to rebuild
        return fn(root / "deepforest", **options)
    return fn(root / name, force=force, **options)
