"""The dataset readers, by name: one registry for every evaluator and the pretraining monitor.

Contract of a reader registered in :data:`DATASETS`: ``reader(root: Path, split: str, transform, *, classes,
**options)`` returns a torch ``Dataset`` of ``(image, target)`` items with

- ``classes``: class names in label order;
- ``targets``: one int label per image, or for multi-label sets (VOC) an ``(N, C)`` array of 1/-1/0;
- ``images``: the image paths in row order (no image is read to list them).

A reader raises :class:`DatasetNotFound` when the folder or annotation file is absent and :class:`DataError`
when it is malformed. :func:`open_split` adds the checks every reader shares, from the config's ``data`` block:
the class count (or names), at least one image, the first image readable, and the published image count of
the split where the protocol states one (``data.expect``): a partial copy of a dataset fails here, before any
feature is extracted or any GPU hour spent.

Configs name a reader in ``data.reader`` and its extra options in ``data.options``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from torch.utils.data import Dataset

from moco_bench.core.errors import DataError
from moco_bench.core.registry import Registry
from moco_bench.data.images import load_rgb

DATASETS = Registry("dataset reader")


@DATASETS.register("imagefolder")
def imagefolder(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None):
    """``<root>/<split>/<class>/<image>`` (ImageNet, Places205 and Fashion-MNIST trees)."""
    from moco_bench.data.imagefolder import ImageFolder

    return ImageFolder(root / split, transform)


@DATASETS.register("voc")
def voc(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None):
    """VOCdevkit year folder, multi-label: ``ImageSets/Main/<split>.txt`` and ``<class>_<split>.txt``."""
    from moco_bench.data.voc import VOCClassification

    if not isinstance(classes, Sequence) or isinstance(classes, str):
        raise DataError(f"{root}: the voc reader needs data.classes as the list of class names")
    return VOCClassification(root, split, list(classes), transform)


@DATASETS.register("places205")
def places205(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None,
              layout: str = "auto"):
    """Places205: the official list files (``layout: list``) or class folders (``folder``); ``auto`` picks."""
    from moco_bench.data.places205 import Places205

    return Places205(root, split, transform=transform, layout=layout)


@DATASETS.register("imagelist")
def imagelist(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None,
              lists: str = "meta", images: str = ""):
    """mmselfsup's list files: ``<root>/<lists>/<split>.txt`` (``<relative path> <label>`` per line), the images
    under ``<root>/<images>``."""
    from moco_bench.data.listed import ListedImages

    return ListedImages(root / lists / f"{split}.txt", root / images, transform)


@DATASETS.register("inat")
def inat(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None):
    """iNaturalist (2018 JSON): ``split`` names the annotation file, e.g. ``train2018.json``."""
    from moco_bench.data.inat import INaturalist

    return INaturalist(root, split, transform=transform)


def check_split(dataset, data: Mapping[str, Any], split: str, source: str) -> None:
    """The checks every reader shares: classes, a readable first image, and the expected image count."""
    where = f"{source} ({data['reader']} {data['root']}, split {split})"
    expected = data.get("classes")
    if isinstance(expected, int) and len(dataset.classes) != expected:
        raise DataError(f"{where}: has {len(dataset.classes)} classes, the config expects {expected}")
    if isinstance(expected, Sequence) and not isinstance(expected, str) and list(dataset.classes) != list(expected):
        raise DataError(f"{where}: classes {list(dataset.classes)[:5]}... differ from the config's data.classes")
    if len(dataset.images) == 0:
        raise DataError(f"{where}: lists no images")
    count = (data.get("expect") or {}).get(split)
    if count is not None and len(dataset.images) != int(count):
        raise DataError(f"{where}: {len(dataset.images)} images, but the published split has {int(count)}: a "
                        "partial or different copy (data.expect in the protocol config names the source)")
    dataset.read_first() if hasattr(dataset, "read_first") else load_rgb(Path(dataset.images[0]))  # CIFAR: rows


def open_split(data: Mapping[str, Any], split: str, transform: Optional[Callable] = None,
               source: str = "config") -> Dataset:
    """The reader ``data["reader"]`` on ``data["root"]`` / ``split``, checked by :func:`check_split`."""
    reader = DATASETS.get(str(data["reader"]))
    dataset = reader(Path(str(data["root"])), str(split), transform, classes=data.get("classes"),
                     **dict(data.get("options") or {}))
    check_split(dataset, data, str(split), source)
    return dataset


from moco_bench.data import transfer_sets  # noqa: E402,F401  (registers the transfer suite's readers)
