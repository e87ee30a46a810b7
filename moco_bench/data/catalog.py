"""The front of the dataset registry: every module that registers a format is imported here, and splits are
opened and checked here (:func:`open_split`, :func:`open_pair`), the same way for every evaluator, the
pretraining data and its monitor.

The checks every split gets, from the config's ``data`` block: the class count (or names), at least one image,
the first image readable, and the published image count where the protocol states one (``data.expect``): a
partial copy of a dataset fails here, before any feature is extracted or any GPU hour spent. A pair of splits
must also share its classes (labels would mean other classes in the two).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

from torch.utils.data import Dataset

from moco_bench.core.errors import DataError
from moco_bench.data import (  # noqa: F401 (they register formats)
    readers,
    segmentation_sources,
    shards,
    sources,
    transfer_sets,
)
from moco_bench.data.images import load_rgb
from moco_bench.data.registry import SplitReader, of_kind, validate


def validate_datasets(cfg: Any, source: str) -> None:
    """A loaded config's ``data`` block or ``datasets.sources`` against the registered formats' schemas."""
    validate(cfg, source)


def where(data: Mapping[str, Any], split: str, source: str) -> str:
    return f"{source} ({data['reader']} {data['root']}, split {split})"


def check_split(dataset, data: Mapping[str, Any], split: str, source: str) -> None:
    """The checks every reader shares: classes, a readable first image, and the expected image count."""
    at = where(data, split, source)
    expected = data.get("classes")
    if isinstance(expected, int) and len(dataset.classes) != expected:
        raise DataError(f"{at}: has {len(dataset.classes)} classes, the config expects {expected}")
    if isinstance(expected, Sequence) and not isinstance(expected, str) and list(dataset.classes) != list(expected):
        raise DataError(f"{at}: classes {list(dataset.classes)[:5]}... differ from the config's data.classes")
    if len(dataset.images) == 0:
        raise DataError(f"{at}: lists no images")
    count = (data.get("expect") or {}).get(split)
    if count is not None and len(dataset.images) != int(count):
        raise DataError(f"{at}: {len(dataset.images)} images, but the published split has {int(count)}: a "
                        "partial or different copy (data.expect in the protocol config names the source)")
    load_image = getattr(dataset, "load_image", None)  # readers whose images are not files (shards) read them
    load_image(0) if load_image is not None else load_rgb(Path(dataset.images[0]))


def open_split(data: Mapping[str, Any], split: str, transform: Optional[Callable] = None,
               source: str = "config") -> Dataset:
    """The reader ``data["reader"]`` on ``data["root"]`` / ``split``, checked by :func:`check_split`."""
    reader = of_kind(str(data["reader"]), SplitReader, "data.reader", source)
    kwargs = {"options": reader.options(**dict(data.get("options") or {}))} if reader.options else {}
    dataset = reader.open(Path(str(data["root"])), str(split), transform, classes=data.get("classes"), **kwargs)
    check_split(dataset, data, str(split), source)
    return dataset


def open_pair(data: Mapping[str, Any], train_transform: Optional[Callable] = None,
              test_transform: Optional[Callable] = None, source: str = "config") -> Tuple[Dataset, Dataset]:
    """``(train, test)``: both splits of ``data`` opened and checked, and holding the same classes."""
    train = open_split(data, data["train_split"], train_transform, source)
    test = open_split(data, data["test_split"], test_transform, source)
    same_classes(data, {str(data["train_split"]): train.classes, str(data["test_split"]): test.classes}, source)
    return train, test


def same_classes(data: Mapping[str, Any], classes: Mapping[str, Sequence[str]], source: str) -> None:
    first, *rest = classes
    for split in rest:
        if list(classes[split]) != list(classes[first]):
            differ = sorted(set(classes[split]) ^ set(classes[first]))[:5] or "the same names in another order"
            raise DataError(f"{source} ({data['reader']} {data['root']}): splits {first} and {split} have other "
                            f"classes ({len(classes[first])} vs {len(classes[split])}; differing: {differ}): labels "
                            "would mean other classes in the two splits")
