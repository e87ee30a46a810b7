"""The dataset readers, by name: one registry for every evaluator and the pretraining monitor.

Contract of a reader registered in :data:`~moco_bench.data.registry.DATASETS` (by :func:`register_reader`, with
the dataclass of its options): ``reader(root: Path, split: str, transform, *, classes[, options])`` (``options``:
an instance of that dataclass, from ``data.options``) returns a torch ``Dataset`` of ``(image, target)`` items with

- ``classes``: class names in label order;
- ``targets``: one int label per image, or for multi-label sets (VOC) an ``(N, C)`` array of 1/-1/0;
- ``images``: the image paths in row order (no image is read to list them); a reader whose images are not files
  (tar shards) names them by ``<shard>/<key>`` and adds ``load_image(index)``.

A reader raises :class:`DatasetNotFound` when the folder or annotation file is absent and :class:`DataError`
when it is malformed. :func:`moco_bench.data.catalog.open_split` adds the checks every reader shares.

Configs name a reader in ``data.reader`` and its extra options in ``data.options``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from moco_bench.core.errors import DataError
from moco_bench.core.schema import field
from moco_bench.data.imagefolder import ImageFolder
from moco_bench.data.inat import INaturalist
from moco_bench.data.listed import ListedImages
from moco_bench.data.places205 import Places205
from moco_bench.data.registry import register_reader
from moco_bench.data.voc import VOCClassification


@dataclass
class Places205Options:
    layout: str = field("auto", choices=("auto", "list", "folder"))


@dataclass
class ImageListOptions:
    lists: str = "meta"  # <root>/<lists>/<split>.txt
    images: str = ""  # the images under <root>/<images>


@register_reader("imagefolder")
def imagefolder(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None):
    """``<root>/<split>/<class>/<image>`` (ImageNet, Places205 and Fashion-MNIST trees)."""
    return ImageFolder(root / split, transform)


@register_reader("voc")
def voc(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None):
    """VOCdevkit year folder, multi-label: ``ImageSets/Main/<split>.txt`` and ``<class>_<split>.txt``."""
    if not isinstance(classes, Sequence) or isinstance(classes, str):
        raise DataError(f"{root}: the voc reader needs data.classes as the list of class names")
    return VOCClassification(root, split, list(classes), transform)


@register_reader("places205", Places205Options)
def places205(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None,
              options: Places205Options):
    """Places205: the official list files (``layout: list``) or class folders (``folder``); ``auto`` picks."""
    return Places205(root, split, transform=transform, layout=options.layout)


@register_reader("imagelist", ImageListOptions)
def imagelist(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None,
              options: ImageListOptions):
    """mmselfsup's list files: ``<root>/<lists>/<split>.txt`` (``<relative path> <label>`` per line), the images
    under ``<root>/<images>``."""
    return ListedImages(root / options.lists / f"{split}.txt", root / options.images, transform)


@register_reader("inat")
def inat(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None):
    """iNaturalist (2018 JSON): ``split`` names the annotation file, e.g. ``train2018.json``."""
    return INaturalist(root, split, transform=transform)
