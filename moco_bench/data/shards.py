"""WebDataset tar shards (``data.reader: webdataset``): how clusters hold ImageNet when millions of small files are
not an option.

The format is webdataset's: each shard is a plain tar; the files of one sample share a key (``<key>.jpg`` or
``.jpeg/.png/.webp``, the image; ``<key>.cls``, its integer label as text). A split is ``<root>/<split>/*.tar`` or
``<root>/<split>-*.tar`` (webdataset's ``imagenet-train-000123.tar`` naming). Class names come from
``<root>/classes.txt`` (one per line, in label order), else they are the labels as text.

The shards are indexed once by their tar headers (no image is decoded; only the tiny ``.cls`` files are read), so
the split is a map-style dataset: random access by seek, as the frozen-feature and linear evaluators need, with
the same checks as every reader (class count, published image count, a readable first image). An image is named
``<shard>/<key>.<ext>`` in ``images``, so the dataset fingerprint does not depend on where the shards lie.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from PIL import Image
from torch.utils.data import Dataset

from moco_bench.core.errors import DataError, DatasetNotFound
from moco_bench.data.images import load_rgb
from moco_bench.data.registry import register_reader

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
MAX_LABEL_BYTES = 64


@dataclass(frozen=True)
class Entry:
    shard: Path
    offset: int  # of the image's data in the shard
    size: int
    name: str  # <key>.<ext>


def shard_files(root: Path, split: str) -> List[Path]:
    folder = sorted((root / split).glob("*.tar")) if (root / split).is_dir() else []
    files = folder or sorted(root.glob(f"{split}-*.tar"))
    if not files:
        raise DatasetNotFound(f"{root}: no WebDataset shards for split {split!r} (expected {root / split}/*.tar or "
                              f"{root}/{split}-*.tar)")
    return files


def _key_and_ext(name: str) -> Tuple[str, str]:
    """webdataset's split of a member name: the key runs to the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    key, _, ext = base.partition(".")
    return (f"{folder}/{key}" if folder else key), ext.lower()


def index_shard(shard: Path) -> List[Tuple[Entry, int]]:
    """(image entry, label) of every sample of one shard, in tar order."""
    images: Dict[str, Entry] = {}
    labels: Dict[str, int] = {}
    try:
        with tarfile.open(shard, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = _key_and_ext(member.name)
                if ext in IMAGE_EXTENSIONS:
                    images[key] = Entry(shard, member.offset_data, member.size, f"{key}.{ext}")
                elif ext == "cls":
                    raw = tar.extractfile(member).read(MAX_LABEL_BYTES + 1)
                    try:
                        labels[key] = int(raw.decode("ascii").strip())
                    except (UnicodeDecodeError, ValueError):
                        raise DataError(f"{shard}: {member.name} is not an integer label ({raw[:20]!r})") from None
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{shard}: not a readable tar shard ({e})") from None
    unlabelled = sorted(set(images) - set(labels))
    if unlabelled:
        raise DataError(f"{shard}: {len(unlabelled)} image(s) without a .cls label, e.g. {unlabelled[0]}")
    return [(images[k], labels[k]) for k in images]


class ShardSplit(Dataset):
    """One split of a WebDataset shard set, indexed for random access."""

    def __init__(self, root: Path, split: str, transform: Optional[Callable] = None):
        self.root, self.transform = Path(root), transform
        indexed = [item for shard in shard_files(self.root, split) for item in index_shard(shard)]
        self.entries = [e for e, _ in indexed]
        self.targets = [label for _, label in indexed]
        self.classes = self._classes()

    def _classes(self) -> List[str]:
        top = max(self.targets, default=-1)
        names_file = self.root / "classes.txt"
        if not names_file.is_file():
            return [str(i) for i in range(top + 1)]
        names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        if top >= len(names) or min(self.targets, default=0) < 0:
            raise DataError(f"{names_file}: {len(names)} class names, but the shards hold labels up to {top}")
        return names

    @property
    def images(self) -> List[str]:
        return [str(e.shard / e.name) for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def load_image(self, index: int) -> Image.Image:
        entry = self.entries[index]
        with open(entry.shard, "rb") as f:
            f.seek(entry.offset)
            data = f.read(entry.size)
        return load_rgb(entry.shard / entry.name, data)

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        img = self.load_image(index)
        return (self.transform(img) if self.transform else img), self.targets[index]


@register_reader("webdataset")
def webdataset(root: Path, split: str, transform: Optional[Callable] = None, *, classes: Any = None):
    """WebDataset tar shards: ``<root>/<split>/*.tar`` or ``<root>/<split>-*.tar``, ``<key>.jpg`` + ``<key>.cls``."""
    return ShardSplit(root, split, transform)
