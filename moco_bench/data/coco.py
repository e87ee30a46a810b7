"""COCO instances JSON through pycocotools, with the image folder checked against the annotations."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from pycocotools.coco import COCO

from moco_bench.core.errors import DataError, DatasetNotFound


def load_coco(ann_file: Path, image_root: Path, check_images: bool = True) -> COCO:
    """Load ``ann_file`` with pycocotools; error naming the file on bad JSON or a missing image."""
    ann_file, image_root = Path(ann_file), Path(image_root)
    if not ann_file.is_file():
        raise DatasetNotFound(f"{ann_file}: COCO annotation file not found")
    if not image_root.is_dir():
        raise DatasetNotFound(f"{image_root}: COCO image folder not found")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            coco = COCO(str(ann_file))
    except (json.JSONDecodeError, KeyError, TypeError, AssertionError) as e:
        raise DataError(f"{ann_file}: not a COCO instances JSON ({type(e).__name__}: {e})") from None
    if check_images:
        for img in coco.dataset.get("images", []):
            if not (image_root / img["file_name"]).is_file():
                raise DataError(f"{ann_file}: image {img['file_name']!r} not found under {image_root}")
    return coco
