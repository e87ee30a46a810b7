"""Image loading with errors that name the file."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from moco_bench.core.errors import DataError

_WIDE = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # more than 8 bits per sample


def load_rgb(path: Path, data: Optional[bytes] = None) -> Image.Image:
    """An 8-bit RGB image from any mode PIL reads: 16-bit, 32-bit and float samples are scaled (PIL's own
    ``convert`` clips them), palettes expanded (through RGBA where they carry transparency), CMYK converted,
    grayscale replicated, alpha dropped (as torchvision's loader does). ``data``: the file's bytes where they
    were read from elsewhere (a tar shard); ``path`` then only names the image in errors."""
    try:
        with (io.BytesIO(data) if data is not None else open(path, "rb")) as f:
            img = Image.open(f)
            img.load()
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:  # the bomb is no OSError
        raise DataError(f"{path}: unreadable image ({e})") from None
    if img.mode in _WIDE:
        return _scaled(img, path).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def _scaled(img: Image.Image, path: Path) -> Image.Image:
    """A wide single-channel image as 8-bit: 16-bit integer samples / 257 (65535 -> 255), float samples in
    [0, 1] x 255; 32-bit integers are read as 16-bit data when they fit (PIL opens 16-bit PNGs as "I")."""
    values = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        top = 1.0 if values.size and np.nanmax(values) <= 1.0 else 255.0
    elif img.mode.startswith("I;16") or (values.size and values.max() <= 65535 and values.min() >= 0):
        top = 65535.0
    else:
        raise DataError(f"{path}: 32-bit samples outside 0..65535; convert the image to 8 or 16 bits")
    return Image.fromarray(np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8), mode="L")


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
