"""Image loading with errors that name the file."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from moco_bench.errors import DataError


def load_rgb(path: Path) -> Image.Image:
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{path}: unreadable image ({e})") from None
