"""An embedded mini-Cityscapes: street-like scenes (bands of sky, building, vegetation, sidewalk, road and the ego
vehicle) with Fashion-MNIST items as the eight instance classes, in Cityscapes' own layout and conventions::

    leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_{polygons.json,labelIds,instanceIds,color,labelTrainIds}.png

The polygon JSON is the annotation; the PNGs are drawn from it by cityscapesscripts' own ``json2labelImg`` and
``createInstanceImage`` (labelTrainIds as its ``createTrainIdLabelImgs`` makes them), so label ids, train ids,
instance ids (label id x 1000 + k) and colours are Cityscapes' definitions (``cityscapesscripts.helpers.labels``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np
from PIL import Image, ImageDraw

from moco_bench.data import fashion_mnist
from moco_bench.data.builds import build_once
from moco_bench.data.fashion_mnist import CLASSES as FASHION_CLASSES
from moco_bench.data.scenes import outline, paste_items, pick_items

# Cityscapes' eight instance classes, given to the first eight Fashion-MNIST classes in order.
THINGS = ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
# Background bands from the top, with the fraction of the height where each ends (jittered per image side).
BANDS = (("sky", 0.2), ("building", 0.42), ("vegetation", 0.52), ("sidewalk", 0.62), ("road", 0.93),
         ("ego vehicle", 1.0))
CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt",)}
SPLITS = (("train", "train"), ("val", "test"))  # Cityscapes split, Fashion-MNIST half


def _bands(rng: np.random.Generator, h: int, w: int, image: np.ndarray) -> List[dict]:
    """Band polygons (pixel indices, as Cityscapes' annotations) drawn into ``image`` in their label's colour."""
    from cityscapesscripts.helpers.labels import name2label

    edges = [(0, 0)]
    for _, end in BANDS[:-1]:
        edges.append(tuple(int(np.clip(end * h + rng.integers(-h // 20, h // 20 + 1), 1, h - 1)) for _ in "lr"))
    edges.append((h - 1, h - 1))
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    objects = []
    for (name, _), (top, bottom) in zip(BANDS, zip(edges[:-1], edges[1:])):
        polygon = [[0, top[0]], [w - 1, top[1]], [w - 1, bottom[1]], [0, bottom[0]]]
        draw.polygon([tuple(p) for p in polygon], fill=tuple(int(0.6 * c) for c in name2label[name].color))
        objects.append({"label": name, "polygon": polygon})
    image[:] = np.asarray(canvas)
    return objects


def _write_frame(tmp: Path, split: str, stem: str, image: np.ndarray, objects: List[dict]) -> None:
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
    from cityscapesscripts.preparation.json2labelImg import json2labelImg

    city = stem.split("_")[0]
    img_dir, gt_dir = tmp / "leftImg8bit" / split / city, tmp / "gtFine" / split / city
    img_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(img_dir / f"{stem}_leftImg8bit.png")
    gt = gt_dir / f"{stem}_gtFine_polygons.json"
    gt.write_text(json.dumps({"imgHeight": image.shape[0], "imgWidth": image.shape[1], "objects": objects}))
    for suffix, encoding in (("labelIds", "ids"), ("color", "color"), ("labelTrainIds", "trainIds")):
        json2labelImg(str(gt), str(gt_dir / f"{stem}_gtFine_{suffix}.png"), encoding)
    annotation = Annotation()
    annotation.fromJsonFile(str(gt))
    # json2instanceImg saves a 32-bit "I" image, which Pillow 10+ cannot write as PNG; Cityscapes' files are 16-bit
    instances = np.asarray(createInstanceImage(annotation, "ids"), dtype=np.uint16)
    Image.fromarray(instances).save(gt_dir / f"{stem}_gtFine_instanceIds.png")


def _write_minicityscapes(tmp: Path, *, n_train: int, n_val: int, size: List[int], items: int, scale: List[float],
                          seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = size
    weights = [1.0] * len(THINGS) + [0.0] * (len(FASHION_CLASSES) - len(THINGS))
    for (split, source), n in zip(SPLITS, (n_train, n_val)):
        pool, labels = fashion_mnist.load(source)
        cities = CITIES[split]
        for i in range(n):
            image = np.zeros((h, w, 3), dtype=np.uint8)
            objects = _bands(rng, h, w, image)
            image = np.clip(image.astype(int) + rng.integers(0, 40, size=image.shape), 0, 255).astype(np.uint8)
            picked = pick_items(rng, labels, int(rng.integers(1, items + 1)), weights)
            for obj in paste_items(rng, image, pool[picked], labels[picked], scale, top=int(BANDS[0][1] * h)):
                polygon = [[int(x), int(y)] for x, y in outline(obj["mask"], corners=False)]
                objects.append({"label": THINGS[obj["label"]], "polygon": polygon})
            _write_frame(tmp, split, f"{cities[i % len(cities)]}_{i:06d}_000019", image, objects)


def build_minicityscapes(out: Path, *, n_train: int = 60, n_val: int = 30, size=(128, 256), items: int = 4,
                         scale=(1.0, 2.0), seed: int = 0, force: bool = False) -> Path:
    """Returns ``out`` (holding ``leftImg8bit/`` and ``gtFine/``, as ``$CITYSCAPES_DATASET`` does)."""
    opts = dict(kind="minicityscapes", n_train=n_train, n_val=n_val, size=list(size), items=items,
                scale=list(scale), seed=seed)
    return build_once(out, opts, _write_minicityscapes, force)
