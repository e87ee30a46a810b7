"""Tiny copies of the transfer suite's datasets, each in the exact on-disk layout torchvision's reader (or the
protocol's source, for the split files torchvision lacks) reads: CIFAR's pickled batches, Food-101's meta/*.json,
FGVC-Aircraft's images_<level>_<split>.txt, Stanford Cars' devkit .mat structs, DTD's labels/<split><n>.txt,
Oxford-IIIT Pet's annotations, Flowers-102's setid.mat / imagelabels.mat, Caltech-101's category folders with
ssl-transfer's list files, SUN397's ClassName.txt and partition files.

Each image is a small JPEG whose colour depends on its class (plus noise), so a linear classifier on any
network's features can tell the classes apart. ``build(name, root)`` returns (root, {split: count}, classes).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
from PIL import Image
from scipy.io import savemat

PER_SPLIT = 6  # images per class and split
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 50, 220), (230, 220, 30)]


def _pixels(label: int, rng: np.random.Generator, size: int = 24) -> np.ndarray:
    base = np.array(COLOURS[label % len(COLOURS)], dtype=np.float64)
    return np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)


def _jpeg(path: Path, label: int, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_pixels(label, rng)).save(path, quality=95)


def food101(root: Path, rng) -> Tuple[Dict[str, int], List[str]]:
    classes = ["apple_pie", "bibimbap", "churros"]
    base = root / "food-101"
    for split in ("train", "test"):
        meta = {c: [f"{c}/{split}{i}" for i in range(PER_SPLIT)] for c in classes}
        for label, c in enumerate(classes):
            for rel in meta[c]:
                _jpeg(base / "images" / f"{rel}.jpg", label, rng)
        (base / "meta").mkdir(parents=True, exist_ok=True)
        (base / "meta" / f"{split}.json").write_text(json.dumps(meta))
    (base / "meta" / "classes.txt").write_text("\n".join(classes) + "\n")
    return {"train": 18, "test": 18}, classes


def _cifar(root: Path, rng, folder: str, files: Dict[str, List[str]], label_key: str, meta: Tuple[str, str],
           classes: List[str]) -> None:
    base = root / folder
    base.mkdir(parents=True)
    for names in files.values():
        for name in names:
            labels = [i % len(classes) for i in range(PER_SPLIT * len(classes) // len(names) or 1)]
            data = np.stack([_pixels(y, rng, 32).transpose(2, 0, 1).reshape(-1) for y in labels])
            with open(base / name, "wb") as f:
                pickle.dump({"batch_label": name, label_key: labels, "data": data,
                             "filenames": [f"{name}_{i}.png" for i in range(len(labels))]}, f, protocol=2)
    with open(base / meta[0], "wb") as f:
        pickle.dump({meta[1]: classes}, f, protocol=2)


def cifar10(root: Path, rng):
    classes = ["airplane", "automobile", "bird"]
    files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    _cifar(root, rng, "cifar-10-batches-py", files, "labels", ("batches.meta", "label_names"), classes)
    return {"train": 5 * (18 // 5), "test": 18}, classes


def cifar100(root: Path, rng):
    classes = ["apple", "aquarium_fish", "baby"]
    _cifar(root, rng, "cifar-100-python", {"train": ["train"], "test": ["test"]}, "fine_labels",
           ("meta", "fine_label_names"), classes)
    return {"train": 18, "test": 18}, classes


def aircraft(root: Path, rng):
    classes = ["707-320", "A300B4", "Boeing 717"]  # variant names hold spaces
    data = root / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(classes) + "\n")
    n = 0
    for split in ("train", "val", "test"):
        lines = []
        for label, c in enumerate(classes):
            for _ in range(PER_SPLIT):
                image = f"{1000000 + n:07d}"
                _jpeg(data / "images" / f"{image}.jpg", label, rng)
                lines.append(f"{image} {c}")
                n += 1
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    return {"train": 18, "val": 18, "test": 18}, classes


def _annotations(names: List[str], labels: List[int]) -> np.ndarray:
    dtype = [(k, "O") for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    rows = np.zeros((1, len(names)), dtype=dtype)
    for i, (name, label) in enumerate(zip(names, labels)):
        rows[0, i] = (np.array([[1]]), np.array([[1]]), np.array([[20]]), np.array([[20]]),
                      np.array([[label + 1]], dtype=np.uint8), np.array([name]))
    return rows


def cars(root: Path, rng):
    classes = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"]
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array([classes], dtype=object)})
    for split, annos in (("train", base / "devkit" / "cars_train_annos.mat"),
                         ("test", base / "cars_test_annos_withlabels.mat")):
        names, labels = [], []
        for i in range(PER_SPLIT * len(classes)):
            names.append(f"{i + 1:05d}.jpg"), labels.append(i % len(classes))
            _jpeg(base / f"cars_{split}" / names[-1], labels[-1], rng)
        savemat(annos, {"annotations": _annotations(names, labels)})
    return {"train": 18, "test": 18}, classes


def dtd(root: Path, rng):
    classes = ["banded", "blotchy", "braided"]
    base = root / "dtd" / "dtd"
    (base / "labels").mkdir(parents=True)
    for split in ("train", "val", "test"):
        lines = []
        for label, c in enumerate(classes):
            for i in range(PER_SPLIT):
                name = f"{c}_{split}_{i:04d}.jpg"
                _jpeg(base / "images" / c / name, label, rng)
                lines.append(f"{c}/{name}")
        (base / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")
    return {"train": 18, "val": 18, "test": 18}, classes


def pets(root: Path, rng):
    breeds = [("Abyssinian", 1), ("american_bulldog", 2), ("Bengal", 1)]  # cats capitalised, dogs not
    base = root / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True)
    for split in ("trainval", "test"):
        lines = []  # annotations/{trainval,test}.txt: '<image> <class id> <species> <breed id>', no header
        for label, (breed, species) in enumerate(breeds):
            for i in range(PER_SPLIT):
                image = f"{breed}_{i + 1 + (100 if split == 'test' else 0)}"
                _jpeg(base / "images" / f"{image}.jpg", label, rng)
                lines.append(f"{image} {label + 1} {species} {label + 1}")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return {"trainval": 18, "test": 18}, ["Abyssinian", "American Bulldog", "Bengal"]


def flowers(root: Path, rng):
    base = root / "flowers-102"
    labels = []
    ids = {"trnid": [], "valid": [], "tstid": []}
    for key in ids:
        for i in range(PER_SPLIT * 3):
            labels.append(i % 3 + 1)
            ids[key].append(len(labels))
            _jpeg(base / "jpg" / f"image_{len(labels):05d}.jpg", labels[-1] - 1, rng)
    savemat(base / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    savemat(base / "setid.mat", {k: np.array([v], dtype=np.uint16) for k, v in ids.items()})
    from torchvision.datasets import Flowers102

    return {"train": 18, "val": 18, "test": 18}, list(Flowers102.classes)


def caltech101(root: Path, rng):
    classes = ["BACKGROUND_Google", "Faces", "accordion"]  # sorted as the split files number them
    folder = root / "caltech101" / "101_ObjectCategories"
    lines: Dict[str, List[str]] = {"train": [], "test": []}
    for label, c in enumerate(classes):
        for i in range(2 * PER_SPLIT):
            rel = f"{c}/image_{i + 1:04d}.jpg"
            _jpeg(folder / rel, label, rng)
            lines["train" if i < PER_SPLIT else "test"].append(f"{rel} {label}")
    for split, rows in lines.items():
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return {"train": 18, "test": 18}, classes


def sun397(root: Path, rng):
    listed = ["/a/abbey", "/b/bar", "/b/barn"]  # 'bar' is a prefix of 'barn': labels go by folder
    base = root / "SUN397"
    base.mkdir(parents=True)
    (base / "ClassName.txt").write_text("\n".join(listed) + "\n")
    for prefix in ("Training", "Testing"):
        rows = []
        for label, c in enumerate(listed):
            for i in range(PER_SPLIT):
                rel = f"{c}/sun_{prefix.lower()}{i}.jpg"
                _jpeg(base / rel.lstrip("/"), label, rng)
                rows.append(rel)
        (base / f"{prefix}_01.txt").write_text("\n".join(rows) + "\n")
    return {"train": 18, "test": 18}, ["abbey", "bar", "barn"]


BUILDERS: Dict[str, Callable] = {"food101": food101, "cifar10": cifar10, "cifar100": cifar100,
                                 "fgvc_aircraft": aircraft, "stanford_cars": cars, "dtd": dtd, "oxford_pets": pets,
                                 "flowers102": flowers, "caltech101": caltech101, "sun397": sun397}


def build(reader: str, root: Path, seed: int = 0):
    """(root, {split: image count}, class names) of a fresh tiny copy for ``reader``."""
    root.mkdir(parents=True, exist_ok=True)
    counts, classes = BUILDERS[reader](root, np.random.default_rng(seed))
    return root, counts, classes
