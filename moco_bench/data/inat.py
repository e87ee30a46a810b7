"""iNaturalist 2018 (visipedia/inat_comp, 2018/README.md) from its COCO-style JSON annotation files.

``train2018.json`` / ``val2018.json`` hold ``images`` (``id``, ``file_name`` relative to the dataset root, e.g.
``train_val2018/Plantae/7477/<hash>.jpg``), ``annotations`` (one ``image_id`` -> ``category_id`` per image) and
``categories`` (all 8,142 species in both files). Labels are the categories' positions in ``id`` order, so the
train and val files agree on them even where a split lacks a category.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

from moco_bench.core.errors import DataError, DatasetNotFound
from moco_bench.data.images import ImageList


def read_inat_json(ann_file: Path) -> dict:
    """``{"samples": [(file_name, label)], "classes": [name], "category_ids": [id]}`` from one iNat JSON file."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise DatasetNotFound(f"{ann_file}: iNaturalist annotation file not found")
    try:
        doc = json.loads(ann_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{ann_file}: not valid JSON ({e})") from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(doc.get(k), list)]
    if missing:
        raise DataError(f"{ann_file}: not an iNaturalist annotation file: lists {missing} are missing")
    try:
        cats = sorted(doc["categories"], key=lambda c: c["id"])
        label_of = {c["id"]: i for i, c in enumerate(cats)}
        files = {img["id"]: img["file_name"] for img in doc["images"]}
        category_of = {}
        for ann in doc["annotations"]:
            image_id, cat = ann["image_id"], ann["category_id"]
            if image_id not in files:
                raise DataError(f"{ann_file}: annotation {ann.get('id')} names image {image_id}, not in 'images'")
            if cat not in label_of:
                raise DataError(f"{ann_file}: annotation {ann.get('id')} names category {cat}, not in 'categories'")
            if category_of.setdefault(image_id, cat) != cat:
                raise DataError(f"{ann_file}: image {image_id} has annotations of two categories")
    except (KeyError, TypeError) as e:
        raise DataError(f"{ann_file}: an image, annotation or category lacks field {e}") from None
    unlabeled = [i for i in files if i not in category_of]
    if unlabeled:
        raise DataError(f"{ann_file}: {len(unlabeled)} images have no annotation (first: image {unlabeled[0]})")
    return {"samples": [(files[i], label_of[category_of[i]]) for i in files],
            "classes": [str(c.get("name", c["id"])) for c in cats], "category_ids": [c["id"] for c in cats]}


class INaturalist(ImageList):
    """One iNaturalist split as ``(image, label)`` items.

    Args:
        root: the folder that ``file_name`` paths are relative to (holding ``train_val2018/``).
        ann_file: the split's JSON file (absolute, or relative to ``root``).
    """

    def __init__(self, root: Path, ann_file: Path | str, transform: Optional[Callable] = None):
        self.root = Path(root)
        ann_file = self.root / ann_file
        if not self.root.is_dir():
            raise DatasetNotFound(f"{self.root}: iNaturalist folder not found")
        parsed = read_inat_json(ann_file)
        self.classes, self.category_ids = parsed["classes"], parsed["category_ids"]
        self.samples = [(str(self.root / f), label) for f, label in parsed["samples"]]
        self.targets = [label for _, label in self.samples]
        self.transform = transform
