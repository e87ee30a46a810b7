"""The dataset check every evaluation runs before any work, and what its record keeps of it.

A dataset root is where the data is, not what it is: the check decides what it is. For a classification config
(``data``) it opens each split with its reader as the evaluator will (class count or names, a readable first
image, the published image count where ``data.expect`` gives one) and requires train and test to share their
classes; for a detectron2 config (``datasets.sources``) it runs the checks of each source's format family
(detection: :mod:`moco_bench.data.sources`; semantic segmentation: :mod:`moco_bench.data.segmentation_sources`).
Each split or source then reports its image count and a fingerprint of its sorted relative file list, so two
copies of one dataset in different folders give the same record.

The keys of :data:`LOCATION_KEYS` say only where files lie; :func:`moco_bench.engine.comparability.settle` lets
a run change them and stay comparable when every split holds the protocol's published image count.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from moco_bench.core.errors import ConfigError, DataError
from moco_bench.data import segmentation_sources, sources
from moco_bench.data.listing import fingerprint, relative_names
from moco_bench.data.readers import open_split

LOCATION_KEYS = ("data.root", "datasets.sources.*.root", "datasets.sources.*.json", "datasets.sources.*.image_root",
                 "datasets.sources.*.image_dir", "datasets.sources.*.gt_dir")
FAMILIES = {**{f: sources for f in sources.FORMATS}, **{f: segmentation_sources for f in segmentation_sources.FORMATS}}


def check_data(cfg: Mapping[str, Any], source: str = "config") -> Dict[str, dict]:
    """``{split or source name: {"images": n, "fingerprint": hex, ...}}`` of a resolved evaluation config.

    Raises:
        DatasetNotFound: a folder or annotation file is absent.
        DataError: a partial copy (another image count than ``expect``), other classes, an unreadable image.
        ConfigError: a source of an unknown format.
    """
    if cfg.get("datasets") is not None:
        return _check_sources(cfg["datasets"], source)
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
    first, *rest = classes
    for split in rest:
        if classes[split] != classes[first]:
            differ = sorted(set(classes[split]) ^ set(classes[first]))[:5] or "the same names in another order"
            raise DataError(f"{source} ({data['reader']} {data['root']}): splits {first} and {split} have other "
                            f"classes ({len(classes[first])} vs {len(classes[split])}; differing: {differ}): labels "
                            "would mean other classes in the two splits")
    return out


def _check_sources(datasets: Mapping[str, Any], source: str) -> Dict[str, dict]:
    names = [str(n) for n in list(datasets["train"]) + list(datasets["test"])]
    specs = datasets.get("sources") or {}
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ConfigError(f"{source}: datasets.train/test name {unknown}, not described in datasets.sources")
    by_family: Dict[Any, dict] = {}
    for name in dict.fromkeys(names):
        fmt = specs[name].get("format")
        if fmt not in FAMILIES:
            raise ConfigError(f"{source}: datasets.sources.{name}.format is {fmt!r}; expected one of {tuple(FAMILIES)}")
        by_family.setdefault(FAMILIES[fmt], {})[name] = specs[name]
    out: Dict[str, dict] = {}
    for family, group in by_family.items():
        out.update(family.check_sources(group, [str(n) for n in datasets["test"]], datasets.get("classes"), source))
    return out
