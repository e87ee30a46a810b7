"""The dataset check every evaluation runs before any work, and what its record keeps of it.

A dataset root is where the data is, not what it is: the check decides what it is. For a classification config
(``data``) it opens each split with its reader as the evaluator will (:mod:`moco_bench.data.catalog`); for a
detectron2 config (``datasets.sources``) it runs each source's format (:mod:`moco_bench.data.registry`): every
folder and annotation file there, each split holding its published number of images, every class of a VOC test
set with a ground-truth object (a class without one would score AP 0 and pull the mean down: a perfect detector
would read 90, not 100), and COCO annotations that name no image of their file counted (detectron2 drops them
with a line in its log; the result records how many). Each split or source then reports its image count and a
fingerprint of its sorted relative file list, so two copies of one dataset in different folders give the same
record.

The keys of :func:`location_keys` say only where files lie; :func:`moco_bench.engine.comparability.settle` lets
a run change them and stay comparable when every split holds the protocol's published image count.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Sequence

from moco_bench.core.errors import ConfigError, DataError, DatasetNotFound
from moco_bench.data.catalog import open_split, same_classes
from moco_bench.data.listing import fingerprint, relative_names
from moco_bench.data.registry import SourceFormat, location_keys, of_kind

log = logging.getLogger(__name__)
LOCATION_KEYS = location_keys()
WHERE_REAL_DATA_LIVES = {
    "detection": "Real datasets live under $MOCO_BENCH_DATASETS laid out as detectron2's DETECTRON2_DATASETS "
                 "(VOC2007/, VOC2012/, coco/annotations + coco/train2017, val2017, lvis/, cityscapes/leftImg8bit + "
                 "gtFine); embedded ones are built by `moco-bench data build minivoc|minicoco|minilvis|"
                 "minicityscapes`",
    "segmentation": "VOC2012 with SegmentationClassAug and train_aug.txt, or cityscapes/leftImg8bit + gtFine with "
                    "labelTrainIds, under $MOCO_BENCH_DATASETS; embedded ones: `moco-bench data build minivocseg|"
                    "minicityscapes`"}


def check_data(cfg: Mapping[str, Any], source: str = "config") -> Dict[str, dict]:
    """``{split or source name: {"images": n, "fingerprint": hex, ...}}`` of a resolved evaluation config.

    Raises:
        DatasetNotFound: a folder or annotation file is absent.
        DataError: a partial copy (another image count than ``expect``), other classes, an unreadable image.
        ConfigError: a source of an unknown format.
    """
    if cfg.get("datasets") is not None:
        datasets = cfg["datasets"]
        names = [str(n) for n in list(datasets["train"]) + list(datasets["test"])]
        specs = datasets.get("sources") or {}
        unknown = [n for n in names if n not in specs]
        if unknown:
            raise ConfigError(f"{source}: datasets.train/test name {unknown}, not described in datasets.sources")
        return check_sources({n: specs[n] for n in dict.fromkeys(names)}, [str(n) for n in datasets["test"]],
                             datasets.get("classes"), source)
    if cfg.get("data") is not None:
        return _check_splits(cfg["data"], source)
    return {}


def _check_splits(data: Mapping[str, Any], source: str) -> Dict[str, dict]:
    out, classes = {}, {}
    for split in dict.fromkeys([str(data["train_split"]), str(data["test_split"])]):
        dataset = open_split(data, split, None, source)
        classes[split] = list(dataset.classes)
        out[split] = {"images": len(dataset.images), "classes": len(dataset.classes),
                      "fingerprint": fingerprint(relative_names(dataset.images, data["root"]))}
    same_classes(data, classes, source)
    return out


def check_sources(sources: Mapping[str, Mapping], test: Sequence[str], classes: Sequence[str] | None,
                  source: str = "config") -> Dict[str, dict]:
    """Fail before training on a missing, partial or class-less source; returns per source its summary."""
    formats: Dict[str, SourceFormat] = {
        name: of_kind(str(spec.get("format")), SourceFormat, f"datasets.sources.{name}.format", source)
        for name, spec in sources.items()}
    missing = [m for name, spec in sources.items() for m in formats[name].missing(name, spec)]
    if missing:
        families = dict.fromkeys(f.family for f in formats.values())
        raise DatasetNotFound(f"{'/'.join(families)} datasets missing (" + "; ".join(missing) + "). " +
                              " ".join(WHERE_REAL_DATA_LIVES[f] for f in families))
    summary = {name: formats[name].summary(name, spec, classes, name in test) for name, spec in sources.items()}
    for name, spec in sources.items():
        where = ", ".join(str(spec[key]) for key in formats[name].locations)
        n = summary[name]["images"]
        if spec.get("expect") is not None and n != int(spec["expect"]):
            raise DataError(f"{source}: datasets.sources.{name} lists {n} images, but the published split has "
                            f"{int(spec['expect'])}: a partial or different copy ({where})")
        empty = [c for c, k in summary[name].get("objects_per_class", {}).items() if k == 0]
        if empty:
            raise DataError(f"{source}: test set {name} ({where}) has no ground-truth object of class(es) "
                            f"{', '.join(empty)}; their AP would be 0 and count in the mean")
        if summary[name].get("annotations_without_image"):
            log.warning("%s: %d annotation(s) name no image of %s; detectron2 drops them", source,
                        summary[name]["annotations_without_image"], spec["json"])
    return summary
