"""An embedded mini-LVIS v0.5: Fashion-MNIST scenes as LVIS instance JSON, read by the ``lvis`` API and
detectron2's LVIS loader.

Layout, as detectron2 expects the real one (``datasets/lvis/`` beside ``datasets/coco/``)::

    lvis/lvis_v0.5_{train,val}.json
    coco/{train2017,val2017}/<id>.jpg        # each image's ``coco_url`` ends in <folder>/<file>, as LVIS's do

Items are drawn from a long-tailed class distribution (``tail``: class k has weight tail**k; every class is in
at least one training image, and validation starts with head and tail classes in turn), so the categories split
into LVIS's frequency groups by the number of training images holding them: LVIS's rule (rare 1-10, common
11-100, frequent more) with the thresholds of ``frequency_images`` scaled to the mini set. Every image lists the
categories it does not hold as verified negatives (``neg_category_ids``; the scenes are labelled exhaustively, so
``not_exhaustive_category_ids`` is empty).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from moco_bench.data import fashion_mnist
from moco_bench.data.builds import build_once
from moco_bench.data.fashion_mnist import CLASSES as FASHION_CLASSES
from moco_bench.data.scenes import outline, paste_items, pick_items

SPLITS = (("train", "train2017", "train"), ("val", "val2017", "test"))  # split, image folder, Fashion-MNIST half
# The class of the first item of the first images: every class is in training; head and tail alternate in
# validation, so that even a few validation images hold rare, common and frequent categories.
FIRST = {"train": tuple(range(len(FASHION_CLASSES))), "val": (0, 9, 4, 1, 8, 5, 2, 7, 3, 6)}


def _frequency(n_images: int, thresholds: Sequence[int]) -> str:
    return "r" if n_images <= thresholds[0] else "c" if n_images <= thresholds[1] else "f"


def _scene_annotations(objects: List[Dict], image_id: int, next_id: int, size) -> List[Dict]:
    anns = []
    for k, obj in enumerate(objects):
        poly = [v for xy in outline(obj["mask"], corners=True) for v in xy]
        rle = mask_utils.merge(mask_utils.frPyObjects([poly], *size))
        x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
        anns.append({"id": next_id + k, "image_id": image_id, "category_id": obj["label"] + 1, "segmentation": [poly],
                     "bbox": [x, y, w, h], "area": float(mask_utils.area(rle))})
    return anns


def _split_json(folder: str, ids: List[int], scenes: List[List[Dict]], first_ann: int, size):
    images, annotations = [], []
    for image_id, objects in zip(ids, scenes):
        present = sorted({o["label"] + 1 for o in objects})
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "height": size[0], "width": size[1],
                       "coco_url": f"moco-bench://minilvis/{folder}/{image_id:012d}.jpg", "license": 1,
                       "not_exhaustive_category_ids": [],
                       "neg_category_ids": [c for c in range(1, len(FASHION_CLASSES) + 1) if c not in present]})
        annotations += _scene_annotations(objects, image_id, first_ann + len(annotations), size)
    return images, annotations


def _categories(train_scenes: List[List[Dict]], thresholds: Sequence[int]) -> List[Dict]:
    images = np.zeros(len(FASHION_CLASSES), dtype=int)
    instances = np.zeros(len(FASHION_CLASSES), dtype=int)
    for objects in train_scenes:
        labels = [o["label"] for o in objects]
        images[sorted(set(labels))] += 1
        np.add.at(instances, labels, 1)
    return [{"id": c + 1, "name": name, "synonyms": [name], "synset": f"{name}.n.01", "def": f"Fashion-MNIST {name}",
             "image_count": int(images[c]), "instance_count": int(instances[c]),
             "frequency": _frequency(int(images[c]), thresholds)} for c, name in enumerate(FASHION_CLASSES)]


def _write_minilvis(tmp: Path, *, n_train: int, n_val: int, canvas: List[int], items: int, scale: List[float],
                    tail: float, frequency_images: List[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    weights = [tail ** k for k in range(len(FASHION_CLASSES))]
    (tmp / "lvis").mkdir(parents=True)
    docs, scenes, counter, n_ann = {}, {}, 0, 1
    for (split, folder, source), n in zip(SPLITS, (n_train, n_val)):
        pool, labels = fashion_mnist.load(source)
        (tmp / "coco" / folder).mkdir(parents=True)
        ids, scenes[split] = list(range(counter + 1, counter + n + 1)), []
        for i, image_id in enumerate(ids):
            img = rng.integers(0, 24, size=tuple(canvas), dtype=np.uint8)
            first = FIRST[split][i] if i < len(FIRST[split]) else None
            picked = pick_items(rng, labels, int(rng.integers(1, items + 1)), weights, first)
            scenes[split].append(paste_items(rng, img, pool[picked], labels[picked], scale))
            Image.fromarray(img).convert("RGB").save(tmp / "coco" / folder / f"{image_id:012d}.jpg", quality=95)
        counter += n
        images, annotations = _split_json(folder, ids, scenes[split], n_ann, canvas)
        n_ann += len(annotations)
        docs[split] = {"info": {"description": "moco-bench embedded mini-LVIS v0.5 (Fashion-MNIST scenes)"},
                       "licenses": [{"id": 1, "name": "Fashion-MNIST (MIT)", "url": ""}],
                       "images": images, "annotations": annotations}
    categories = _categories(scenes["train"], frequency_images)
    for split, doc in docs.items():
        (tmp / "lvis" / f"lvis_v0.5_{split}.json").write_text(json.dumps({**doc, "categories": categories}))


def build_minilvis(out: Path, *, n_train: int = 120, n_val: int = 60, canvas=(96, 128), items: int = 3,
                   scale=(1.0, 2.0), tail: float = 0.7, frequency_images=(4, 20), seed: int = 0,
                   force: bool = False) -> Path:
    """Returns ``out`` (holding ``lvis/`` and ``coco/``). ``frequency_images``: the most training images of a rare
    and of a common category (LVIS: 10 and 100)."""
    if n_train < len(FASHION_CLASSES):
        raise ValueError(f"n_train must be at least {len(FASHION_CLASSES)}: every category needs a training image")
    opts = dict(kind="minilvis", n_train=n_train, n_val=n_val, canvas=list(canvas), items=items, scale=list(scale),
                tail=tail, frequency_images=list(frequency_images), seed=seed)
    return build_once(out, opts, _write_minilvis, force)
