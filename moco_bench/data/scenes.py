"""Scenes of Fashion-MNIST items for the embedded segmentation datasets (mini-LVIS, mini-Cityscapes, mini-VOC
segmentation): items pasted without overlap on a background, each with its pixel mask and an outline polygon.

Items do not overlap, so an item's polygon is its whole ground truth (no occlusion to subtract) in every format:
COCO/LVIS polygons, Cityscapes' polygon JSON, VOC label PNGs.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from moco_bench.data.builds import ITEM_THRESHOLD

PLACEMENT_TRIES = 20  # random positions tried per item before it is left out (the canvas is full)
GAP = 2  # pixels kept free between item boxes


def pick_items(rng: np.random.Generator, labels: np.ndarray, n: int, weights: Optional[Sequence[float]] = None,
               first: Optional[int] = None) -> List[int]:
    """Indices of ``n`` pool images; with ``weights`` the class of each is drawn from them (a long tail), and
    ``first`` forces the class of the first item."""
    if weights is None and first is None:
        return [int(i) for i in rng.integers(len(labels), size=n)]
    p = np.full(int(labels.max()) + 1, 1.0) if weights is None else np.asarray(weights, dtype=float)
    classes = list(rng.choice(len(p), size=n, p=p / p.sum()))
    if first is not None and n:
        classes[0] = first
    return [int(rng.choice(np.flatnonzero(labels == c))) for c in classes]


def paste_items(rng: np.random.Generator, canvas: np.ndarray, items: Sequence[np.ndarray], labels: Sequence[int],
                scale: Sequence[float], top: int = 0) -> List[Dict]:
    """Paste grey 28x28 ``items`` (resized to ``scale`` x 28 px) into ``canvas`` (H, W or H, W, 3) in place, at
    rows from ``top`` down, where they overlap nothing placed before; returns ``{label, mask}`` per placed item."""
    h, w = canvas.shape[:2]
    taken: List[tuple] = []
    out = []
    for item, label in zip(items, labels):
        side = min(int(rng.integers(int(28 * scale[0]), int(28 * scale[1]) + 1)), h - top, w)
        pixels = np.asarray(Image.fromarray(item).resize((side, side), Image.BILINEAR))
        for _ in range(PLACEMENT_TRIES):
            y0, x0 = int(rng.integers(top, h - side + 1)), int(rng.integers(0, w - side + 1))
            box = (x0 - GAP, y0 - GAP, x0 + side + GAP, y0 + side + GAP)
            if all(box[2] <= t[0] or t[2] <= box[0] or box[3] <= t[1] or t[3] <= box[1] for t in taken):
                break
        else:
            continue
        mask = np.zeros((h, w), dtype=bool)
        mask[y0:y0 + side, x0:x0 + side] = pixels > ITEM_THRESHOLD
        if mask.sum() < 16:
            continue
        taken.append(box)
        region = canvas[y0:y0 + side, x0:x0 + side]
        on = pixels > ITEM_THRESHOLD
        region[on] = pixels[on][:, None] if canvas.ndim == 3 else pixels[on]
        out.append({"label": int(label), "mask": mask})
    return out


def outline(mask: np.ndarray, corners: bool = True) -> List[List[float]]:
    """A simple polygon around ``mask``: down the left end of each row, up the right end (the mask's row-convex
    hull, so gaps inside a row are filled). ``corners``: vertices on pixel corners (COCO/LVIS coordinates, pixel
    x covers [x, x + 1)); otherwise on pixel indices (Cityscapes' polygons, drawn boundary-inclusive)."""
    rows = np.flatnonzero(mask.any(axis=1))
    left, right = [], []
    for y in rows:
        xs = np.flatnonzero(mask[y])
        lo, hi = int(xs.min()), int(xs.max())
        if corners:
            left += [[lo, y], [lo, y + 1]]
            right += [[hi + 1, y + 1], [hi + 1, y]]
        else:
            left.append([lo, y])
            right.append([hi, y])
    points = left + right[::-1]
    return [[float(x), float(y)] for k, (x, y) in enumerate(points) if k == 0 or [x, y] != points[k - 1]]
