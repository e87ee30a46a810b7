"""ImageFolder (ImageNet, Places205 folder layout, the embedded tree) with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

from torchvision import datasets

from moco_bench.core.errors import DataError, DatasetNotFound
from moco_bench.data.images import load_rgb


class ImageFolder(datasets.ImageFolder):
    """torchvision's ImageFolder, failing early and clearly on a missing or empty folder or a bad image."""

    def __init__(self, root: Path, transform: Optional[Callable] = None):
        root = Path(root)
        if not root.is_dir():
            raise DatasetNotFound(f"{root}: dataset folder not found (expected <root>/<class>/<image> files)")
        try:
            super().__init__(str(root), transform=transform, loader=load_rgb)
        except (FileNotFoundError, RuntimeError) as e:
            raise DataError(f"{root}: not an ImageFolder tree ({e})") from None

    @property
    def images(self) -> List[str]:
        return [path for path, _ in self.samples]
