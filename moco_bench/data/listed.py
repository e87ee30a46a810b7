"""Images listed in a text file, one ``<relative image path> <integer label>`` per line: the Places205 release's
split files and mmselfsup's ``meta/{train,val}.txt`` lists (its ImageNet, Places205 and iNat splits)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional, Tuple

from moco_bench.core.errors import DataError, DatasetNotFound
from moco_bench.data.images import ImageList


def read_list_file(path: Path) -> List[Tuple[str, int]]:
    """``[(relative image path, label)]`` from a split file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFound(f"{path}: split file not found")
    samples = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{path}:{lineno}: expected '<relative image path> <integer label>', got {line!r}")
        samples.append((parts[0], int(parts[1])))
    if not samples:
        raise DataError(f"{path}: split file lists no images")
    return samples


def _class_names(samples: List[Tuple[str, int]], source: Path) -> List[str]:
    """Class names indexed by label; labels must run 0..K-1 and each name a single label."""
    names = {}
    for rel, label in samples:
        names.setdefault(label, str(Path(rel).parent))
    labels = sorted(names)
    if labels != list(range(len(labels))):
        missing = sorted(set(range(labels[-1] + 1)) - set(labels))[:5]
        raise DataError(f"{source}: labels must run 0..K-1; found {len(labels)} distinct labels from {labels[0]} "
                        f"to {labels[-1]} (absent: {missing})")
    return [names[i] for i in labels]


class ListedImages(ImageList):
    """The images ``list_file`` names, under ``image_root``; a class is named after its images' folder."""

    def __init__(self, list_file: Path, image_root: Path, transform: Optional[Callable] = None):
        list_file, image_root = Path(list_file), Path(image_root)
        if not image_root.is_dir():
            raise DatasetNotFound(f"{image_root}: image folder not found (list file {list_file})")
        pairs = read_list_file(list_file)
        self.classes = _class_names(pairs, list_file)
        self.samples = [(str(image_root / rel), label) for rel, label in pairs]
        self.targets = [label for _, label in self.samples]
        self.transform = transform
