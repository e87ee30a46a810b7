"""Linear evaluation on a frozen backbone: moco's main_lincls (``linear``: a plain fc on the global average) and the
multi-layer heads of mmselfsup / vissl (``mhead_linear``: BN + Linear on pooled feature1..feature5), plus
``mhead_linear_fast``, heads trained on cached features of the test transform, for quick looks.

All three build one :class:`~moco_bench.evaluators.linear.train.LinearRun` from the config (numbers in
evaluate/imagenet_linear.yaml and friends) and train it with ``train_heads``. Datasets are read by the
reader ``data.reader`` names (moco_bench.data.DATASETS: ImageFolder, Places205, iNaturalist, ...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Dict, Tuple

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from moco_bench.core.config import resolved, source_of
from moco_bench.core.distributed import DistEnv, setup
from moco_bench.core.errors import ConfigError
from moco_bench.data.catalog import open_pair
from moco_bench.data.transforms import eval_size, eval_transform, linear_train_transform
from moco_bench.evaluators.base import EvalContext, EvalOutput
from moco_bench.evaluators.features import load_pair
from moco_bench.evaluators.linear.heads import Heads, linear_layer, norm_linear_heads
from moco_bench.evaluators.linear.train import LinearRun, TrainConfig, train_heads
from moco_bench.models.inference import NHWC, choose_runtime, prepare
from moco_bench.models.taps import FeatureTaps, stage_channels

FAST_VARIANT = "fast: heads on cached features, no augmentation"


def build_datasets(cfg: DictConfig) -> Tuple[Dataset, Dataset]:
    """The train split with the protocol's augmentation and the test split with its evaluation transform."""
    data, t = resolved(cfg)["data"], resolved(cfg)["transform"]
    return open_pair(data, linear_train_transform(t["train"], t["mean"], t["std"]),
                     eval_transform(t["test"], t["mean"], t["std"]), source_of(cfg))


def frozen_backbone(backbone, cfg: DictConfig, device: torch.device):
    """The backbone as a frozen torchvision ResNet (fc = Identity) and a CPU copy of its tensors for the check.
    ``pixels:`` (no network: the linear classifier on the flattened image) fits any protocol's ``arch``."""
    if backbone.arch != cfg.arch and backbone.format != "pixels":
        raise ConfigError(f"{source_of(cfg)}: the protocol is set up for {cfg.arch}, but checkpoint {backbone.path} "
                          f"holds a {backbone.arch} backbone (override arch={backbone.arch} to run it anyway)")
    model = backbone.build_model()
    model.requires_grad_(False).eval()
    reference = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    return model.to(device), reference


def fingerprint(backbone, cfg: DictConfig, world_size: int) -> str:
    """What a resumable checkpoint must agree on: the resolved config, the backbone and the world size."""
    conf = {k: v for k, v in resolved(cfg).items() if k != "_source_"}
    blob = json.dumps({"config": conf, "backbone": [str(backbone.path), backbone.sha256], "world": world_size},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def build_heads(cfg: DictConfig, model, taps: FeatureTaps) -> Heads:
    """A plain fc per layer (main_lincls) or BN + Linear per layer (multi-head), initialized from ``cfg.seed``."""
    layers, h, n = list(cfg.features.layers), cfg.head, int(cfg.data.classes)
    dims = taps.dims(eval_size(cfg.transform.test))
    torch.manual_seed(int(cfg.seed))
    if not h.norm:
        return Heads({name: linear_layer(dims[name], n, float(h.init_std)) for name in layers})
    channels = stage_channels(model)
    return norm_linear_heads(layers, dims, channels, n, affine=bool(h.norm_affine), momentum=float(h.norm_momentum),
                             eps=float(h.norm_eps), init_std=float(h.init_std))


def linear_run(backbone, cfg: DictConfig, ctx: EvalContext, env: DistEnv, train_set, val_set, extract=None,
               workers: int | None = None) -> LinearRun:
    """The run of a config: the frozen model, its taps, fresh heads, the data and where state is kept."""
    if cfg.transform.train.crop != eval_size(cfg.transform.test):
        raise ConfigError(f"{source_of(cfg)}: train and test crops differ; the pooled feature sizes would not match")
    model, reference = frozen_backbone(backbone, cfg, env.device)
    taps = FeatureTaps(model, list(cfg.features.layers), resolved(cfg)["features"]["pooling"])
    tc, f = TrainConfig.from_config(cfg), cfg.features
    runtime = choose_runtime(str(f.runtime), str(env.device), str(f.precision), bool(f.channels_last))
    if extract is None:
        extract, runtime = prepare(taps, str(env.device), runtime, str(f.precision))
    tc = dataclasses.replace(tc, channels_last=runtime in NHWC)  # the mkldnn graph takes plain tensors
    return LinearRun(extract=extract, heads=build_heads(cfg, model, taps), backbone=model,
                     reference=reference, train_set=train_set, val_set=val_set, tc=tc,
                     num_classes=int(cfg.data.classes), out_dir=ctx.out_dir, env=env,
                     workers=ctx.workers if workers is None else workers,
                     fingerprint=fingerprint(backbone, cfg, env.world_size), source=source_of(cfg), stage=ctx.stage)


def metrics_of(summary: Dict[str, dict]) -> Dict[str, float]:
    """Flat metric names of a summary: ``top1`` for main_lincls' GAP fc, ``featureN_top1`` per multi-head layer."""
    prefix = list(summary) != ["gap"]
    return {f"{layer}_{key}" if prefix else key: float(s[key]) for layer, s in summary.items()
            for key in ("top1", "top5", "top1_last", "top5_last")}


def _output(cfg: DictConfig, run: LinearRun, result: dict, extra_variant: str = "") -> EvalOutput:
    layers = list(cfg.features.layers)
    details = {"history": result["history"],
               "best_epoch": {k: v["best_epoch"] for k, v in result["summary"].items()},
               "frozen_check": result["frozen_check"], "resumed_from": result["resumed_from"], "lr": run.tc.lr,
               "world_size": run.env.world_size, "batch_per_rank": run.tc.batch_size // run.env.world_size,
               "precision": run.tc.precision, "channels_last": run.tc.channels_last,
               "runtime": choose_runtime(str(cfg.features.runtime), str(run.env.device), run.tc.precision,
                                         bool(cfg.features.channels_last)),
               "head_norm": ("SyncBN" if run.env.world_size > 1 and run.env.device.type == "cuda"
                             else "BN (per process)") if cfg.head.norm else "none"}
    variant = "; ".join(v for v in (str(cfg.variant or ""), extra_variant) if v)
    info = {"dataset": str(cfg.data.name), "dataset_root": str(cfg.data.root), "split": str(cfg.data.test_split),
            "layer": layers[0] if len(layers) == 1 else "all", "pooling": resolved(cfg)["features"]["pooling"],
            "seeds": [int(cfg.seed)], "variant": variant}
    several, images = list(result["summary"]) != ["gap"], getattr(run.val_set, "images", None)
    examples = {"images": images, "root": str(cfg.data.root), "metrics": {  # the names of metrics_of
        f"{layer}_top1" if several else "top1": {"kind": "accuracy", "hits": hits}
        for layer, hits in result["hits"].items()}} if result["hits"] and images is not None else {}
    return EvalOutput(metrics=metrics_of(result["summary"]), details=details, info=info, examples=examples)


def linear_heads(backbone, cfg: DictConfig, ctx: EvalContext) -> EvalOutput:
    """The linear protocols (main_lincls, the multi-head protocols): heads on the frozen backbone's taps, trained
    on augmented images."""
    env = setup(ctx.device)
    with ctx.stage("data"):
        train_set, val_set = build_datasets(cfg)
    run = linear_run(backbone, cfg, ctx, env, train_set, val_set)
    return _output(cfg, run, train_heads(run))


class _CachedFeatures(Dataset):
    """``({layer: feature row}, label)`` items over the feature cache: read into memory when it fits in
    ``in_memory_bytes`` (row-by-row reads of a memory map dominate an epoch of small heads), else memory-mapped."""

    def __init__(self, split, in_memory_bytes: int = 4 << 30):
        feats = split.features
        if sum(v.nbytes for v in feats.values()) <= in_memory_bytes:
            feats = {k: torch.from_numpy(np.array(v)) for k, v in feats.items()}
        self.feats, self.labels, self.images = feats, torch.as_tensor(split.labels), split.images

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return {k: v[i] if torch.is_tensor(v) else torch.from_numpy(np.array(v[i])) for k, v in self.feats.items()}, \
            self.labels[i]


def _cache_request(cfg: DictConfig) -> DictConfig:
    """The feature-cache request (``features.load_split``'s config) equal to this protocol's test preprocessing."""
    c = resolved(cfg)
    features = {**c["features"], "batch_size": int(cfg.optim.batch_size)}
    return OmegaConf.create({"_source_": source_of(cfg), "data": c["data"], "transform": c["transform"],
                             "features": features})


def mhead_linear_fast(backbone, cfg: DictConfig, ctx: EvalContext) -> EvalOutput:
    """Quick look: the multi-layer heads trained on cached features of the test transform (no augmentation).

    Not the protocol: its evaluator differs from the protocol's, so its results are never comparable, and they
    carry their own variant label so that tables keep them apart. The features come from the shared cache
    (``features.py``), so a second run skips the backbone.
    """
    env = setup(ctx.device)
    if env.world_size > 1:
        raise ConfigError(f"{source_of(cfg)}: the fast variant runs in one process (it is meant for quick looks)")
    request = _cache_request(cfg)
    train, val = load_pair(backbone, request, dataclasses.replace(ctx, device=str(env.device)))
    run = linear_run(backbone, cfg, ctx, env, _CachedFeatures(train), _CachedFeatures(val), extract=lambda f: f,
                     workers=0)
    out = _output(cfg, run, train_heads(run), extra_variant=FAST_VARIANT)
    out.details["feature_cache"] = {"train": train.cache, "val": val.cache}
    return out
