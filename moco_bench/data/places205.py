"""Places205 (Zhou et al., NeurIPS 2014) in its two on-disk layouts.

- ``list``: the official release: images under ``data/vision/torralba/deeplearning/images256/`` and the splits
  in ``trainvalsplit_places205/{train,val}_places205.csv``, one ``<relative path> <label>`` per line, separated
  by a space despite the extension (mmselfsup's ``meta/{train,val}.txt`` use the same line format).
- ``folder``: ``<root>/{train,val}/<class>/<image>``, the ImageFolder layout vissl's ``disk_folder`` reads.

Both give ``(image, label)`` items and a ``classes`` list; in the list layout a class is named after the folder
of its images (``a/abbey``), so labels and names stay together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional, Tuple

from moco_bench.core.errors import DataError, DatasetNotFound
from moco_bench.data.imagefolder import ImageFolder
from moco_bench.data.images import ImageList

LIST_DIR = "trainvalsplit_places205"
IMAGE_DIR = "data/vision/torralba/deeplearning/images256"
LAYOUTS = ("auto", "list", "folder")


def read_list_file(path: Path) -> List[Tuple[str, int]]:
    """``[(relative image path, label)]`` from a Places205 split file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFound(f"{path}: Places205 split file not found")
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


class Places205(ImageList):
    """One Places205 split (``train`` or ``val``) as ``(image, label)`` items.

    Args:
        root: the dataset root (holding ``trainvalsplit_places205/`` for ``list``, ``train/`` ``val/`` for ``folder``).
        split: ``train`` or ``val``.
        layout: ``list``, ``folder`` or ``auto`` (``list`` when the split folder of the release is there).
        list_file, image_root: another split file / image folder for the ``list`` layout (e.g. mmselfsup's meta/).
    """

    def __init__(self, root: Path, split: str, transform: Optional[Callable] = None, layout: str = "auto",
                 list_file: Optional[Path] = None,
                 image_root: Optional[Path] = None):
        root = Path(root)
        if layout not in LAYOUTS:
            raise DataError(f"{root}: Places205 layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
        if layout == "auto":
            layout = "list" if (list_file is not None or (root / LIST_DIR).is_dir()) else "folder"
        self.root, self.split, self.layout, self.transform = root, split, layout, transform
        if layout == "folder":
            folder = ImageFolder(root / split)
            self.samples, self.classes = list(folder.samples), list(folder.classes)
        else:
            list_file = Path(list_file) if list_file is not None else root / LIST_DIR / f"{split}_places205.csv"
            image_root = Path(image_root) if image_root is not None else root / IMAGE_DIR
            if not image_root.is_dir():
                raise DatasetNotFound(f"{image_root}: Places205 image folder not found (list file {list_file})")
            pairs = read_list_file(list_file)
            self.classes = _class_names(pairs, list_file)
            self.samples = [(str(image_root / rel), label) for rel, label in pairs]
        self.targets = [label for _, label in self.samples]
