"""Frozen features: one backbone pass per (checkpoint, dataset, split, transform, precision), cached on disk.

The SVM, low-shot SVM and kNN evaluators read the same features, so a cache entry holds one memory-mapped
``.npy`` per pooled layer beside a JSON manifest that states what produced it. An entry is reused only when
the manifest matches the request exactly and every array has its full size; otherwise the missing or stale
layers are recomputed (and the reason logged), so a cache can cost time but never change a number.
"""

from __future__ import annotations

import logging
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from moco_bench.core.config import source_of
from moco_bench.core.errors import ConfigError, DataError
from moco_bench.core.progress import bar
from moco_bench.data.catalog import open_split
from moco_bench.data.transforms import eval_size, eval_transform
from moco_bench.evaluators.cache import CacheEntry, RowWriter, check_free_space, digest
from moco_bench.models.inference import NHWC, choose_runtime, prepare
from moco_bench.models.taps import FeatureTaps

log = logging.getLogger(__name__)

CACHE_VERSION = 2
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class FeatureSplit:
    """Features of one dataset split.

    Attributes:
        features: ``layer -> (N, D) float32`` (read-only memory maps of the cache files).
        labels: ``(N,)`` int64 class indices (ImageFolder) or ``(N, C)`` float32 of 1/-1/0 (VOC).
        classes: class names, in label order.
        images: image paths, row order.
        cache: ``layer -> "hit" | "miss" | "recomputed: <reason>"``.
        runtime: how the network that computed them was prepared (:mod:`moco_bench.models.inference`).
    """

    features: Dict[str, np.ndarray]
    labels: np.ndarray
    classes: List[str]
    images: List[str]
    cache: Dict[str, str] = field(default_factory=dict)
    runtime: str = "eager"


def split_items(dataset) -> tuple[np.ndarray, List[str], List[str]]:
    """(labels, classes, image paths) of a reader's dataset (moco_bench.data.readers), without reading images:
    int64 class indices, or float32 1/-1/0 per class for multi-label VOC."""
    targets = np.asarray(dataset.targets)
    dtype = np.float32 if targets.ndim == 2 else np.int64
    return targets.astype(dtype), list(dataset.classes), [str(p) for p in dataset.images]


def read_rows(arr: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` as a new in-memory array (a copy: the caller may modify it). A cache memory map is
    read with plain file reads, so streaming over a 10 GB cache leaves its pages in the page cache instead of
    this process's resident set."""
    if isinstance(arr, np.memmap) and isinstance(arr.base, mmap.mmap) and arr.flags.c_contiguous:
        stop = min(stop, arr.shape[0])
        row = int(np.prod(arr.shape[1:])) if arr.ndim > 1 else 1
        out = np.fromfile(arr.filename, dtype=arr.dtype, count=max(stop - start, 0) * row,
                          offset=arr.offset + start * row * arr.itemsize)
        return out.reshape((-1,) + arr.shape[1:])
    return np.array(arr[start:stop])


def check_finite(features: np.ndarray, images: Sequence[str], what: str, chunk: int = 8192) -> None:
    """Raise DataError naming the images whose features hold NaN or Inf (chunked: bounded memory)."""
    bad: List[int] = []
    for start in range(0, len(features), chunk):
        rows = read_rows(features, start, start + chunk)
        bad += (np.flatnonzero(~np.isfinite(rows).all(axis=1)) + start).tolist()
    if bad:
        names = ", ".join(str(images[i]) for i in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise DataError(f"{what}: features of {len(bad)} image(s) contain NaN or Inf: {names}")


@torch.inference_mode()
def extract(taps: FeatureTaps, dataset, outputs: Mapping[str, Path], *, images: Sequence[str], batch_size: int,
            workers: int, device: str, precision: str = "fp32", channels_last: bool = False, runtime: str = "eager",
            desc: str = "features") -> None:
    """One pass of ``taps`` over ``dataset`` (in order), writing ``layer -> (N, D) float32 .npy`` to ``outputs``.

    Rows are appended with ordinary writes (a full disk is an OSError naming the file, not a SIGBUS of a memory
    map) under temporary names renamed only after the whole pass, so an interrupted run leaves no file that looks
    complete; every exit path removes the temporaries. Raises DataError naming the images whose features are
    not finite.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"features.precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    device_type = torch.device(device).type
    taps, runtime = prepare(taps, device, runtime, precision, channels_last)
    channels_last = runtime in NHWC  # the mkldnn graph takes plain tensors
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device_type == "cuda")
    writers: Dict[str, RowWriter] = {}
    bad: List[int] = []
    try:
        start = 0
        for batch, _ in bar(loader, desc=desc, unit="batch", leave=False):
            batch = batch.to(device, non_blocking=True)
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type, dtype=PRECISIONS[precision], enabled=precision != "fp32"):
                out = taps(batch)
            for layer, feats in out.items():
                feats = feats.float().cpu().numpy()
                if layer not in writers:
                    writers[layer] = RowWriter(outputs[layer], len(dataset), feats.shape[1])
                writers[layer].write(feats)
                bad += (np.flatnonzero(~np.isfinite(feats).all(axis=1)) + start).tolist()
            start += len(batch)
        if bad:
            bad = sorted(set(bad))
            names = ", ".join(str(images[i]) for i in bad[:10]) + (" ..." if len(bad) > 10 else "")
            raise DataError(f"{desc}: features of {len(bad)} image(s) contain NaN or Inf: {names}")
        for writer in writers.values():
            writer.finish()
    finally:
        for writer in writers.values():
            writer.discard()


def load_split(backbone, cfg: DictConfig, cache_dir: Path, split: str, *, device: str = "cpu", workers: int = 2,
               layers: Sequence[str] | None = None, min_images: int = 1) -> FeatureSplit:
    """Features of ``cfg.data`` / ``split`` for ``layers`` (default ``cfg.features.layers``), from the cache or
    from one backbone pass that computes every missing layer together. A split with fewer than ``min_images``
    images (kNN: the largest k) is an error before any extraction."""
    fcfg = cfg.features
    layers = list(layers or fcfg.layers)
    pooling = {name: OmegaConf.to_container(fcfg.pooling[name], resolve=True) if name in fcfg.pooling else None
               for name in layers}
    missing_spec = [name for name, spec in pooling.items() if spec is None]
    if missing_spec:
        raise ConfigError(f"{source_of(cfg)}: no features.pooling entry for {missing_spec}")
    tspec = OmegaConf.to_container(cfg.transform, resolve=True)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    dataset = open_split(data, split, eval_transform(tspec["test"], tspec["mean"], tspec["std"]),
                         source=source_of(cfg))
    labels, classes, images = split_items(dataset)
    if len(images) < min_images:
        raise ConfigError(f"{source_of(cfg)}: {data['root']} split {split} has {len(images)} images; "
                          f"the protocol needs at least {min_images} (kNN: k larger than the training set)")
    root = Path(str(data["root"])).resolve()
    rel = [os.path.relpath(p, root) for p in images]
    key = {
        "version": CACHE_VERSION,
        "checkpoint": backbone.sha256,
        "dataset": {"reader": data["reader"], "root": str(root), "split": split, "classes": classes,
                    "images": digest(rel, 64), "n": len(images)},
        "transform": {"test": tspec["test"], "mean": tspec["mean"], "std": tspec["std"]},
        "precision": fcfg.precision,
        "channels_last": bool(fcfg.channels_last),
        "runtime": choose_runtime(str(fcfg.runtime), device, str(fcfg.precision), bool(fcfg.channels_last)),
    }
    entry = CacheEntry(cache_dir, key)
    found, status = entry.read(layers, pooling, len(images))  # complete entries need no lock (read-only caches)
    if len(found) < len(layers):
        with entry.lock():  # writers serialize; another process may have finished the entry meanwhile
            found, status = entry.read(layers, pooling, len(images))
            todo = [name for name in layers if name not in found]
            if todo:
                found.update(_compute(backbone, entry, todo, pooling, dataset, images, status, tspec, fcfg,
                                      device=device, workers=workers, desc=f"features {Path(root).name}/{split}"))
    return FeatureSplit(features={name: found[name] for name in layers}, labels=labels, classes=classes,
                        images=images, cache=status, runtime=key["runtime"])


def load_pair(backbone, cfg: DictConfig, ctx, layers: Sequence[str] | None = None,
              min_images: int = 1) -> tuple[FeatureSplit, FeatureSplit]:
    """``(train, test)`` features of ``cfg.data``'s two splits (:func:`load_split`), timed as the ``features``
    stage of ``ctx`` (an EvalContext), the two holding the same classes (labels would mean other classes)."""
    with ctx.stage("features"):
        train = load_split(backbone, cfg, ctx.cache_dir, str(cfg.data.train_split), device=ctx.device,
                           workers=ctx.workers, layers=layers, min_images=min_images)
        test = load_split(backbone, cfg, ctx.cache_dir, str(cfg.data.test_split), device=ctx.device,
                          workers=ctx.workers, layers=layers)
    if train.classes != test.classes:
        raise DataError(f"{cfg.data.root}: splits {cfg.data.train_split} and {cfg.data.test_split} have other "
                        f"classes ({len(train.classes)} vs {len(test.classes)})")
    return train, test


def split_info(cfg: DictConfig, train: FeatureSplit, test: FeatureSplit, layers: Sequence[str]) -> Dict[str, Any]:
    """The record's ``evaluation`` fields every frozen-feature protocol shares."""
    return {"dataset": str(cfg.data.name), "dataset_root": str(cfg.data.root),
            "split": f"{cfg.data.train_split}->{cfg.data.test_split}", "layer": layers[0], "layers": list(layers),
            "pooling": {name: OmegaConf.to_container(cfg.features.pooling[name], resolve=True) for name in layers},
            "precision": str(cfg.features.precision), "feature_cache": {"train": train.cache, "test": test.cache},
            "runtime": train.runtime}


def _compute(backbone, entry: CacheEntry, todo, pooling, dataset, images, status, tspec, fcfg, *, device: str,
             workers: int, desc: str) -> Dict[str, np.ndarray]:
    """The missing layers of one cache entry, in one backbone pass, after checking that they fit on the disk."""
    for name in todo:
        if status[name] != "miss":
            log.warning("%s: %s", entry.dir, status[name])
    taps = FeatureTaps(backbone.build_model(), todo, {n: pooling[n] for n in todo})
    dims = taps.dims(eval_size(tspec["test"]))  # a pooling spec that does not fit fails here, before the pass
    check_free_space(entry.dir, len(images) * sum(dims.values()) * 4, desc)
    outputs = {name: entry.dir / entry.file_name(name, pooling[name]) for name in todo}
    extract(taps, dataset, outputs, images=images, batch_size=int(fcfg.batch_size), workers=workers,
            device=device, precision=entry.key["precision"], channels_last=entry.key["channels_last"],
            runtime=entry.key["runtime"], desc=desc)
    return entry.record(todo, pooling, outputs)
