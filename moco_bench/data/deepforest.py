"""Real aerial photographs with real tree boxes, as a VOCdevkit: PyPI's ``deepforest`` package ships them under
its ``data/`` folder (installed as data only, ``--no-deps``, and never imported). Detection tests and benchmarks
use them for the VOC path of the detection transfer on real photographs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Dict, List, Sequence

from PIL import Image

from moco_bench.core.errors import DatasetNotFound
from moco_bench.data.builds import build_once
from moco_bench.data.voc import read_voc_annotation, voc_annotation_xml


def _deepforest_data() -> Path:
    spec = importlib.util.find_spec("deepforest")  # locates the package without importing (running) it
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFound("deepforest's data folder not found: install it as data only with "
                              "`.venv/bin/pip install --no-deps deepforest` (it is never imported)")
    return Path(spec.submodule_search_locations[0]) / "data"


def _write_deepforest(tmp: Path, images: Sequence[str], tile: int, test_tiles: Sequence[Sequence[int]],
                      min_visible: float, label: str | None) -> None:
    src = _deepforest_data()
    voc = tmp / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    splits: Dict[str, List[str]] = {"trainval": [], "test": []}
    for stem in images:
        png, xml = src / f"{stem}.png", src / f"{stem}.xml"
        if not png.is_file() or not xml.is_file():
            raise DatasetNotFound(f"{src}: expected deepforest's {png.name} and {xml.name}")
        image = Image.open(png).convert("RGB")
        objects = read_voc_annotation(xml)["objects"]
        for r in range(image.height // tile):
            for c in range(image.width // tile):
                x0, y0 = c * tile, r * tile
                boxes = []
                for o in objects:  # VOC pixel coordinates are 1-based and inclusive
                    xmin, ymin, xmax, ymax = o["bbox"]
                    cx = (max(xmin, x0 + 1), max(ymin, y0 + 1), min(xmax, x0 + tile), min(ymax, y0 + tile))
                    area = (xmax - xmin + 1) * (ymax - ymin + 1)
                    if cx[2] > cx[0] and cx[3] > cx[1] and \
                            (cx[2] - cx[0] + 1) * (cx[3] - cx[1] + 1) >= min_visible * area:
                        boxes.append({"name": label or o["name"], "difficult": False,
                                      "bbox": (cx[0] - x0, cx[1] - y0, cx[2] - x0, cx[3] - y0)})
                tile_id = f"{stem}_{r}{c}"
                image.crop((x0, y0, x0 + tile, y0 + tile)).save(voc / "JPEGImages" / f"{tile_id}.jpg", quality=95)
                (voc / "Annotations" / f"{tile_id}.xml").write_bytes(voc_annotation_xml(f"{tile_id}.jpg", tile, tile,
                                                                                         boxes))
                splits["test" if [r, c] in [list(t) for t in test_tiles] else "trainval"].append(tile_id)
    for split, ids in splits.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))


def build_deepforest_voc(out: Path, images: Sequence[str] = ("OSBS_029", "SOAP_061"), tile: int = 200,
                         test_tiles: Sequence[Sequence[int]] = ((1, 1),), min_visible: float = 0.5,
                         label: str | None = "Tree") -> Path:
    """deepforest's aerial images (real tree crowns, VOC XML boxes) cut into ``tile`` px tiles as a VOCdevkit.

    Each 400 px image gives a 2x2 grid of 200 px tiles; the tiles at ``test_tiles`` (row, col) of every image form
    the test split, the rest trainval. A box cut by a tile border is kept, clipped, when at least ``min_visible``
    of it is inside the tile. ``label`` names every box (OSBS_029 says ``Tree``, SOAP_061 ``Alive``/``Dead``: all
    are tree crowns); None keeps the file's names. Returns ``out/VOCdevkit/VOC2007``, built once: other options in
    the same folder are refused, as for every embedded dataset.
    """
    options = {"kind": "deepforest", "images": list(images), "tile": tile,
               "test_tiles": [list(t) for t in test_tiles], "min_visible": min_visible, "label": label}
    out = build_once(Path(out), options, _write_deepforest)
    return out / "VOCdevkit" / "VOC2007"
