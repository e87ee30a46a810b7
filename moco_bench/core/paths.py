"""Where things live on disk: the project checkout, the embedded-data cache, the real datasets root,
Fashion-MNIST."""

from __future__ import annotations

import os
from pathlib import Path

from moco_bench.core.errors import ConfigError, MocoBenchError

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


SHIPPED = ("evaluate", "suites", "pretrain", "results/published")


def project_root() -> Path:
    """Where the protocol configs, suites, recipes and published numbers are: the checkout's top-level folders
    (an editable install, where researchers read and edit them), else the copies a wheel ships in
    ``moco_bench/shipped/``."""
    here = Path(__file__).resolve()
    for root in (here.parents[2], here.parents[1] / "shipped"):
        if all((root / d).is_dir() for d in SHIPPED):
            return root
    raise MocoBenchError(f"{here.parents[1]}: moco-bench's protocol configs (evaluate/, suites/, pretrain/, "
                         "results/published/) are neither beside the package nor shipped in it: reinstall it")


def project_file(path: str | Path) -> Path:
    """A config path as given when it exists (relative to the working directory or absolute), else relative to
    the project root, so ``evaluate/voc07_svm.yaml`` works from any directory."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return project_root() / p


def config_file(name: str | Path, folder: str) -> Path:
    """A config given as a path that exists (relative to the working directory, or absolute), else a shipped one:
    by name (``imagenet_knn`` or ``demo/imagenet_knn`` -> ``evaluate/[demo/]imagenet_knn.yaml`` when ``folder``
    is ``evaluate``) or by its path in the project (``evaluate/imagenet_knn.yaml``), from any folder."""
    p = Path(str(name)).expanduser()
    if p.exists() or p.is_absolute():
        return p
    root = project_root()
    named = root / folder / (p if p.suffix in (".yaml", ".yml") else p.with_name(p.name + ".yaml"))
    for candidate in (named, root / p):
        if candidate.is_file():
            return candidate
    known = sorted(str(f.relative_to(root / folder).with_suffix("")) for f in (root / folder).rglob("*.yaml")
                   if "detectron2" not in f.parts)
    raise ConfigError(f"{name}: no such config file, here or among the shipped {folder}/ configs "
                      f"({', '.join(known[:12])}{', ...' if len(known) > 12 else ''})")
