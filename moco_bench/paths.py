"""Where things live on disk: the embedded-data cache, the real datasets root, Fashion-MNIST."""

from __future__ import annotations

import os
from pathlib import Path

FASHION_MNIST_DEFAULT = Path("/usr/share/datasets/fashion-mnist")


def data_cache() -> Path:
    """Folder for the embedded datasets and feature caches (``$MOCO_BENCH_DATA``)."""
    return Path(os.environ.get("MOCO_BENCH_DATA", Path.home() / ".cache" / "moco-bench")).expanduser()


def datasets_root() -> Path:
    """Root of the real datasets (``$MOCO_BENCH_DATASETS``), laid out like detectron2's ``DETECTRON2_DATASETS``."""
    return Path(os.environ.get("MOCO_BENCH_DATASETS", "datasets")).expanduser()


def fashion_mnist_dir() -> Path:
    """Fashion-MNIST idx files: ``$MOCO_BENCH_FASHION_MNIST`` or Debian's ``dataset-fashion-mnist``."""
    return Path(os.environ.get("MOCO_BENCH_FASHION_MNIST", FASHION_MNIST_DEFAULT)).expanduser()
