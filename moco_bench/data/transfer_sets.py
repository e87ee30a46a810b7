"""Readers of the many-dataset linear transfer suite (Kornblith et al. 2019; Ericsson et al. 2021), in the
on-disk layouts ``torchvision.datasets`` reads (``download=False``: a reader never fetches anything).

torchvision lists each split (its own split files: Food-101 ``meta/*.json``, DTD ``labels/*.txt``, Flowers-102
``setid.mat``, ...); these readers keep its image list, labels and class names and read the images with
:func:`moco_bench.data.images.load_rgb`, so a bad file is an error naming it. Two sets have no split in
torchvision and take the split files the protocol's source publishes over torchvision's layout: Caltech-101
(ssl-transfer's ``caltech101-splits/{train,test}.txt``, 102 classes with ``BACKGROUND_Google``) and SUN397 (the
dataset's own ``Training_01.txt`` / ``Testing_01.txt`` partition). CIFAR and Flowers-102 are read here from
the files torchvision's classes name, because torchvision checks those files' md5 against the release, which
no other copy (nor a test's fixture) passes; ``data.expect`` holds the published counts instead. CIFAR keeps
its pickled batches: an image is a row, named ``<batch file>/<row>`` in ``images``.
"""

from __future__ import annotations

import contextlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from moco_bench.core.errors import DataError, DatasetNotFound
from moco_bench.core.schema import field
from moco_bench.data.images import ImageList
from moco_bench.data.listed import read_list_file
from moco_bench.data.registry import register_reader


class Listed(ImageList):
    """``(image, label)`` items of listed image files, with the class names in label order."""

    def __init__(self, samples: Sequence[Tuple[str, int]], classes: Sequence[str], transform=None):
        self.samples = [(str(p), int(y)) for p, y in samples]
        self.classes = [str(c) for c in classes]
        self.targets = [y for _, y in self.samples]
        self.transform = transform


class ArrayImages(Listed):
    """Images held as an ``(N, H, W, 3)`` uint8 array (CIFAR's batches); ``images`` names each row."""

    def __init__(self, pixels: np.ndarray, labels: Sequence[int], names: Sequence[str], classes, transform=None):
        super().__init__(list(zip(names, labels)), classes, transform)
        self.pixels = pixels

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.pixels[index])

    def __getitem__(self, index: int):
        img = self.load_image(index)
        return (self.transform(img) if self.transform is not None else img), self.samples[index][1]


@contextlib.contextmanager
def _torchvision(root: Path, what: str):
    """torchvision's missing-data errors (RuntimeError, FileNotFoundError) as DatasetNotFound naming ``root``."""
    if not Path(root).is_dir():
        raise DatasetNotFound(f"{root}: {what} folder not found")
    try:
        yield
    except (RuntimeError, FileNotFoundError, KeyError, ValueError) as e:
        raise DatasetNotFound(f"{root}: not a {what} copy in torchvision's layout ({e})") from None


def _split(split: str, allowed: Sequence[str], root: Path, what: str) -> str:
    if split not in allowed:
        raise DataError(f"{root}: {what} has splits {', '.join(allowed)}, not {split!r}")
    return split


@register_reader("food101")
def food101(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None):
    """Food-101: ``<root>/food-101/{meta/{train,test}.json, meta/classes.txt, images/}``."""
    from torchvision.datasets import Food101

    with _torchvision(root, "Food-101"):
        ds = Food101(str(root), split=_split(split, ("train", "test"), root, "Food-101"), download=False)
    return Listed(zip(ds._image_files, ds._labels), ds.classes, transform)


def read_batch(path: Path) -> dict:
    """One CIFAR python batch (a Python 2 pickle of arrays and lists): read by the inert unpickler, so nothing
    the file names is imported or run, with Python 2's byte strings read as latin-1 (as torchvision does)."""
    from moco_bench.core.inert_pickle import InertUnpickler

    if not path.is_file():
        raise DatasetNotFound(f"{path}: CIFAR batch file not found")
    try:
        with open(path, "rb") as f:
            unpickler = InertUnpickler(f)
            unpickler.encoding = "latin1"
            obj = unpickler.load()
    except (pickle.UnpicklingError, OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: not a readable CIFAR batch ({e})") from None
    if unpickler.placeholders or not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR batch (a dict of arrays and lists); refused "
                        f"{sorted(unpickler.placeholders)}")
    return obj


def _cifar(cls, root: Path, split: str, transform, label_key: str):
    """torchvision's CIFAR files (its class names them) read without its md5 check, which only the released
    files pass; ``data.expect`` holds the published counts instead."""
    what = cls.__name__
    base = Path(root) / cls.base_folder
    if not base.is_dir():
        raise DatasetNotFound(f"{base}: {what} folder not found (the python version's batches)")
    files = [name for name, _ in (cls.train_list if _split(split, ("train", "test"), root, what) == "train"
                                  else cls.test_list)]
    pixels, labels, names = [], [], []
    for name in files:
        batch = read_batch(base / name)
        try:
            rows = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            labels += [int(v) for v in batch[label_key]]
        except (KeyError, ValueError) as e:
            raise DataError(f"{base / name}: a CIFAR batch needs 'data' (N x 3072 uint8) and '{label_key}' ({e})") \
                from None
        pixels.append(rows)
        names += [str(base / name / str(i)) for i in range(len(rows))]
    meta = read_batch(base / cls.meta["filename"])
    if cls.meta["key"] not in meta:
        raise DataError(f"{base / cls.meta['filename']}: lacks the class names ({cls.meta['key']!r})")
    pixels = np.ascontiguousarray(np.concatenate(pixels))
    if len(labels) != len(pixels):
        raise DataError(f"{base}: {len(pixels)} images but {len(labels)} labels")
    return ArrayImages(pixels, labels, names, meta[cls.meta["key"]], transform)


@register_reader("cifar10")
def cifar10(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None):
    """CIFAR-10: the python pickled batches, ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch,
    batches.meta}``."""
    from torchvision.datasets import CIFAR10

    return _cifar(CIFAR10, root, split, transform, "labels")


@register_reader("cifar100")
def cifar100(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None):
    """CIFAR-100 (fine labels): ``<root>/cifar-100-python/{train, test, meta}``."""
    from torchvision.datasets import CIFAR100

    return _cifar(CIFAR100, root, split, transform, "fine_labels")


@dataclass
class AircraftOptions:
    annotation_level: str = field("variant", choices=("variant", "family", "manufacturer"))


@register_reader("fgvc_aircraft", AircraftOptions)
def fgvc_aircraft(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None,
                  options: AircraftOptions):
    """FGVC-Aircraft 2013b: ``<root>/fgvc-aircraft-2013b/data/{images/, images_<level>_<split>.txt, ...}``."""
    from torchvision.datasets import FGVCAircraft

    with _torchvision(root, "FGVC-Aircraft"):
        ds = FGVCAircraft(str(root), split=_split(split, ("train", "val", "trainval", "test"), root, "FGVC-Aircraft"),
                          annotation_level=options.annotation_level, download=False)
    return Listed(zip(ds._image_files, ds._labels), ds.classes, transform)


@register_reader("stanford_cars")
def stanford_cars(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None):
    """Stanford Cars: ``<root>/stanford_cars/{devkit/cars_meta.mat, devkit/cars_train_annos.mat,
    cars_test_annos_withlabels.mat, cars_train/, cars_test/}``."""
    from torchvision.datasets import StanfordCars

    with _torchvision(root, "Stanford Cars"):
        ds = StanfordCars(str(root), split=_split(split, ("train", "test"), root, "Stanford Cars"), download=False)
    return Listed(ds._samples, ds.classes, transform)


@dataclass
class DTDOptions:
    partition: int = field(1, min=1, max=10)  # labels/{train,val,test}<partition>.txt


@register_reader("dtd", DTDOptions)
def dtd(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None, options: DTDOptions):
    """DTD: ``<root>/dtd/dtd/{images/<class>/, labels/{train,val,test}<partition>.txt}``."""
    from torchvision.datasets import DTD

    with _torchvision(root, "DTD"):
        ds = DTD(str(root), split=_split(split, ("train", "val", "test"), root, "DTD"), partition=options.partition,
                 download=False)
    return Listed(zip(ds._image_files, ds._labels), ds.classes, transform)


@register_reader("oxford_pets")
def oxford_pets(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None):
    """Oxford-IIIT Pet: ``<root>/oxford-iiit-pet/{images/, annotations/{trainval,test}.txt}``."""
    from torchvision.datasets import OxfordIIITPet

    with _torchvision(root, "Oxford-IIIT Pet"):
        ds = OxfordIIITPet(str(root), split=_split(split, ("trainval", "test"), root, "Oxford-IIIT Pet"),
                           download=False)
    return Listed(zip(ds._images, ds._labels), ds.classes, transform)


@register_reader("flowers102")
def flowers102(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None):
    """Oxford Flowers-102: ``<root>/flowers-102/{jpg/image_<id>.jpg, imagelabels.mat, setid.mat}``, read as
    torchvision's Flowers102 reads them (``trnid``/``valid``/``tstid`` of setid.mat, labels 1..102), without
    its md5 check of the two .mat files, which only the released files pass; class names are torchvision's."""
    from scipy.io import loadmat
    from torchvision.datasets import Flowers102

    base = Path(root) / "flowers-102"
    if not (base / "jpg").is_dir():
        raise DatasetNotFound(f"{base / 'jpg'}: Flowers-102 image folder not found")
    key = Flowers102._splits_map[_split(split, ("train", "val", "test"), root, "Flowers-102")]
    try:
        ids = np.atleast_1d(loadmat(base / "setid.mat", squeeze_me=True)[key]).tolist()
        labels = np.atleast_1d(loadmat(base / "imagelabels.mat", squeeze_me=True)["labels"]).astype(int) - 1
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{base}: setid.mat ({key}) or imagelabels.mat (labels) unreadable ({e})") from None
    if ids and max(ids) > len(labels):
        raise DataError(f"{base / 'setid.mat'}: names image {max(ids)}, imagelabels.mat labels {len(labels)}")
    return Listed([(base / "jpg" / f"image_{i:05d}.jpg", labels[i - 1]) for i in ids], Flowers102.classes,
                  transform)


CALTECH_FOLDER = "caltech101/101_ObjectCategories"


@dataclass
class CaltechOptions:
    lists: str = "."  # the folder of the split files, under the root


@register_reader("caltech101", CaltechOptions)
def caltech101(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None,
               options: CaltechOptions):
    """Caltech-101 in torchvision's layout (``<root>/caltech101/101_ObjectCategories/<class>/``) with the split
    files ``<root>/<lists>/<split>.txt`` (``<class>/<image> <label>``, ssl-transfer's caltech101-splits). Classes
    are every category folder in sorted order, ``BACKGROUND_Google`` included, as those files number them."""
    folder = Path(root) / CALTECH_FOLDER
    if not folder.is_dir():
        raise DatasetNotFound(f"{folder}: Caltech-101 image folder not found")
    names = sorted(d.name for d in folder.iterdir() if d.is_dir())
    lists = options.lists
    pairs = read_list_file(Path(root) / lists / f"{split}.txt")
    for rel, label in pairs:
        if not (0 <= label < len(names)) or Path(rel).parts[0] != names[label]:
            raise DataError(f"{Path(root) / lists / f'{split}.txt'}: {rel} has label {label}, but the sorted category "
                            f"folders of {folder} put {Path(rel).parts[0]!r} elsewhere: another copy or split file")
    return Listed([(folder / rel, label) for rel, label in pairs], names, transform)


@dataclass
class SUNOptions:
    partition: str = field("01", pattern=r"(0[1-9]|10)")  # {Training,Testing}_<partition>.txt


@register_reader("sun397", SUNOptions)
def sun397(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None,
           options: SUNOptions):
    """SUN397 in torchvision's layout (``<root>/SUN397/{ClassName.txt, <l>/<class>/...jpg}``) with the dataset's
    partition files ``<root>/SUN397/{Training,Testing}_<partition>.txt`` (``split``: train or test). An image
    is labelled by its folder, its class being that folder's path in ``ClassName.txt``."""
    base = Path(root) / "SUN397"
    names_file = base / "ClassName.txt"
    if not names_file.is_file():
        raise DatasetNotFound(f"{names_file}: SUN397 class list not found")
    listed = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
    index = {c: i for i, c in enumerate(listed)}
    prefix = {"train": "Training", "test": "Testing"}[_split(split, ("train", "test"), root, "SUN397")]
    part = base / f"{prefix}_{options.partition}.txt"
    if not part.is_file():
        raise DatasetNotFound(f"{part}: SUN397 partition file not found (from the dataset's Partitions.zip)")
    samples: List[Tuple[Path, int]] = []
    for lineno, line in enumerate(part.read_text().splitlines(), 1):
        if not line.strip():
            continue
        rel = line.strip()
        cls = str(Path(rel).parent)
        if cls not in index:
            raise DataError(f"{part}:{lineno}: {rel} lies in {cls}, which ClassName.txt does not list")
        samples.append((base / rel.lstrip("/"), index[cls]))
    return Listed(samples, [c[3:] for c in listed], transform)
