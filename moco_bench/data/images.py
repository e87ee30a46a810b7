"""Image loading with errors that name the file."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from moco_bench.core.errors import DataError


def load_rgb(path: Path) -> Image.Image:
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{path}: unreadable image ({e})") from None


class ImageList(Dataset):
    """``(image, label)`` items from ``self.samples``, a list of ``(path, label)`` the subclass fills, with
    ``self.targets`` the labels and ``self.transform`` applied to each image."""

    samples: list
    transform = None

    @property
    def images(self) -> list:
        return [path for path, _ in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        img = load_rgb(Path(path))
        if self.transform is not None:
            img = self.transform(img)
        return img, label
