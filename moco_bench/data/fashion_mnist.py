"""Read Fashion-MNIST from its idx files (as Debian's ``dataset-fashion-mnist`` ships them, gzipped or not)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Tuple

import numpy as np

from moco_bench.core import paths
from moco_bench.core.errors import DataError, DatasetNotFound

# Class names in the dataset's label order (zalandoresearch/fashion-mnist README), usable as VOC/COCO names.
CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")

_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_INSTALL_HINT = (
    "install Debian's package (apt-get install dataset-fashion-mnist) or point MOCO_BENCH_FASHION_MNIST at a "
    "folder holding the four idx files (train-images-idx3-ubyte[.gz], ...)"
)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read Fashion-MNIST idx file ({e})") from None
    if len(data) < 4 + 4 * ndim or data[:2] != b"\x00\x00" or data[2] != 0x08 or data[3] != ndim:
        raise DataError(f"{path}: not an idx file of unsigned bytes with {ndim} dimensions")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path}: truncated (header says {shape}, found {body.size} bytes)")
    return body.reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: Fashion-MNIST file {stem}[.gz] not found; {_INSTALL_HINT}")


def load(split: str, folder: Path | None = None) -> Tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) of the ``train`` or ``test`` split."""
    folder = Path(folder) if folder is not None else paths.fashion_mnist_dir()
    if not folder.is_dir():
        raise DatasetNotFound(f"{folder}: Fashion-MNIST folder not found; {_INSTALL_HINT}")
    img_stem, lab_stem = _FILES[split]
    images = _read_idx(_find(folder, img_stem), 3)
    labels = _read_idx(_find(folder, lab_stem), 1)
    if len(images) != len(labels):
        raise DataError(f"{folder}: {split} has {len(images)} images but {len(labels)} labels")
    return images, labels
