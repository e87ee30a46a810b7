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
from typing import Callable, Optional

from moco_bench.core.errors import DataError
from moco_bench.data.imagefolder import ImageFolder
from moco_bench.data.images import ImageList
from moco_bench.data.listed import ListedImages

LIST_DIR = "trainvalsplit_places205"
IMAGE_DIR = "data/vision/torralba/deeplearning/images256"
LAYOUTS = ("auto", "list", "folder")


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
            listed = ListedImages(list_file if list_file is not None else root / LIST_DIR / f"{split}_places205.csv",
                                  image_root if image_root is not None else root / IMAGE_DIR)
            self.samples, self.classes = listed.samples, listed.classes
        self.targets = [label for _, label in self.samples]
