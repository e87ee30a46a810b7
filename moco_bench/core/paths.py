"""Where things live on disk: the project checkout, the embedded-data cache, the real datasets root,
Fashion-MNIST."""

from __future__ import annotations

import os
from pathlib import Path

from moco_bench.core.errors import MocoBenchError

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


def project_root() -> Path:
    """The checkout holding the package and its protocol configs (``evaluate/``, ``suites/``, ``pretrain/``).

    The configs are not packaged: moco-bench runs from a checkout (``pip install -e .``), and a copy of the
    package without them is an error here rather than a missing file later.
    """
    root = Path(__file__).resolve().parents[2]
    if not all((root / d).is_dir() for d in ("evaluate", "suites", "pretrain")):
        raise MocoBenchError(f"{root}: moco-bench's protocol configs (evaluate/, suites/, pretrain/) are not "
                             "beside the package; install it from a checkout with `pip install -e .`")
    return root


def project_file(path: str | Path) -> Path:
    """A config path as given when it exists (relative to the working directory or absolute), else relative to
    the project root, so ``evaluate/voc07_svm.yaml`` works from any directory."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return project_root() / p


def config_file(name: str | Path, folder: str) -> Path:
    """A shipped config by name (``imagenet_knn`` -> ``<project>/evaluate/imagenet_knn.yaml`` for ``folder``
    ``evaluate``) or any config by path (as :func:`project_file` finds it)."""
    text = str(name)
    if text.endswith((".yaml", ".yml")) or "/" in text or Path(text).expanduser().exists():
        return project_file(text)
    return project_root() / folder / f"{text}.yaml"
