"""Linear evaluation on a frozen backbone: moco's main_lincls (``linear``) and the multi-layer heads of
mmselfsup / vissl (``mhead_linear``), plus ``mhead_linear_fast``, heads trained on cached features for quick looks.

Every number comes from the evaluation config (evaluate/imagenet_linear.yaml and friends); the loop itself is in
``lincls_train.py`` and the heads in ``heads.py``. Datasets: an ImageFolder tree (ImageNet, the embedded data),
Places205 (list files or folders) and iNaturalist (JSON).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset
from torchvision import transforms as T

from moco_bench.config import resolved
from moco_bench.data.imagefolder import ImageFolder
from moco_bench.data.inat import INaturalist
from moco_bench.data.places205 import Places205
from moco_bench.data.transforms import eval_transform
from moco_bench.errors import ConfigError, DataError
from moco_bench.evaluators.base import EVALUATORS, EvalContext, EvalOutput
from moco_bench.evaluators.features import load_split
from moco_bench.evaluators.heads import Heads, Lighting, linear_layer, norm_linear_heads, stage_channels
from moco_bench.evaluators.lincls_train import TrainConfig, dist_info, train_heads
from moco_bench.models.taps import FeatureTaps

FAST_VARIANT = "fast: heads on cached features, no augmentation"


def _source(cfg: DictConfig) -> str:
    return str(cfg.get("_source_", cfg.get("name", "config")))


def train_transform(tcfg: DictConfig) -> T.Compose:
    """The protocol's training augmentation: crop (random-resized, or resize + random crop), flip, optional colour
    jitter and PCA lighting, normalization."""
    t = tcfg.train
    if t.kind == "random_resized_crop":
        ops = [T.RandomResizedCrop(int(t.crop), scale=tuple(t.scale))]
    elif t.kind == "resize_random_crop":  # mmselfsup Places205: Resize 256, CenterCrop 256, RandomCrop 224
        ops = [T.Resize(int(t.resize)), T.CenterCrop(int(t.resize)), T.RandomCrop(int(t.crop))]
    else:
        raise ConfigError(f"transforms.train.kind {t.kind!r}: expected random_resized_crop or resize_random_crop")
    ops.append(T.RandomHorizontalFlip())
    if t.jitter:
        ops.append(T.ColorJitter(*[float(v) for v in t.jitter]))
    ops.append(T.ToTensor())
    if t.lighting:
        ops.append(Lighting(t.lighting.alphastd, t.lighting.eigval, t.lighting.eigvec))
    ops.append(T.Normalize(mean=list(tcfg.mean), std=list(tcfg.std)))
    return T.Compose(ops)


def val_transform(tcfg: DictConfig):
    return eval_transform(int(tcfg.val.resize), int(tcfg.val.crop), tuple(tcfg.mean), tuple(tcfg.std))


def build_dataset(data: DictConfig, split: str, transform) -> Dataset:
    """``data.dataset``: ``imagefolder`` (``root/<split>/<class>/``), ``places205`` (``layout`` list or folder) or
    ``inat`` (``data.<split>`` names the JSON file)."""
    root, n, name = Path(str(data.root)), int(data.num_classes), str(data[split])
    if data.dataset == "imagefolder":
        return ImageFolder(root / name, transform=transform, expected_classes=n)
    if data.dataset == "places205":
        return Places205(root, name, transform=transform, layout=str(data.get("layout", "auto")), expected_classes=n)
    if data.dataset == "inat":
        return INaturalist(root, name, transform=transform, expected_classes=n)
    raise ConfigError(f"data.dataset {data.dataset!r}: expected imagefolder, places205 or inat")


def build_datasets(cfg: DictConfig, train_tf=None, val_tf=None) -> Tuple[Dataset, Dataset]:
    train_tf = train_tf if train_tf is not None else train_transform(cfg.transforms)
    val_tf = val_tf if val_tf is not None else val_transform(cfg.transforms)
    train_set = build_dataset(cfg.data, "train", train_tf)
    val_set = build_dataset(cfg.data, "val", val_tf)
    if train_set.classes != val_set.classes:
        raise DataError(f"{cfg.data.root}: the train and val splits name different classes "
                        f"({len(train_set.classes)} vs {len(val_set.classes)})")
    return train_set, val_set


def frozen_backbone(backbone, cfg: DictConfig, device: torch.device):
    """The backbone as a frozen torchvision ResNet (fc = Identity) and a CPU copy of its tensors for the check."""
    if backbone.arch != cfg.arch:
        raise ConfigError(f"{_source(cfg)}: the protocol is set up for {cfg.arch}, but checkpoint {backbone.path} "
                          f"holds a {backbone.arch} backbone (override arch={backbone.arch} to run it anyway)")
    model = backbone.build_model()
    model.requires_grad_(False).eval()
    reference = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return model, reference


def fingerprint(backbone, cfg: DictConfig, world_size: int) -> str:
    """What a resumable checkpoint must agree on: the resolved config, the backbone and the world size."""
    conf = {k: v for k, v in resolved(cfg).items() if k != "_source_"}
    blob = json.dumps({"config": conf, "backbone": [str(backbone.path), backbone.sha256], "world": world_size},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _info(cfg: DictConfig, layer: str, extra_variant: str = "") -> dict:
    variant = "; ".join(v for v in (str(cfg.variant or ""), extra_variant) if v)
    pooling = resolved(cfg)["features"]["pooling"] if "features" in cfg else "global average (torchvision avgpool)"
    return {"dataset": str(cfg.data.name), "split": str(cfg.data.val), "layer": layer, "pooling": pooling,
            "seeds": [int(cfg.seed)], "variant": variant}


def _details(result: dict, tc: TrainConfig, di) -> dict:
    return {"history": result["history"], "best_epoch": {k: v["best_epoch"] for k, v in result["summary"].items()},
            "frozen_check": result["frozen_check"], "resumed_from": result["resumed_from"], "lr": tc.lr,
            "world_size": di.world_size, "batch_per_rank": tc.batch_size // di.world_size, "amp": tc.amp,
            "channels_last": tc.channels_last,
            "head_norm": "SyncBN" if di.world_size > 1 and di.device.type == "cuda" else "BN (per process)"}


def _metrics(summary: Dict[str, dict], prefix: bool) -> Dict[str, float]:
    out = {}
    for layer, s in summary.items():
        head = f"{layer}_" if prefix else ""
        for key in ("top1", "top5", "top1_last", "top5_last"):
            out[head + key] = float(s[key])
    return out


def _setup(cfg: DictConfig, ctx: EvalContext):
    """This process's device and ranks, the training numbers and the two datasets (augmented, not cached)."""
    di = dist_info(ctx.device)
    tc = TrainConfig.from_config(cfg)
    with ctx.stage("data"):
        train_set, val_set = build_datasets(cfg)
    return di, tc, train_set, val_set


@EVALUATORS.register("linear")
def linear(backbone, cfg: DictConfig, ctx: EvalContext) -> EvalOutput:
    """moco main_lincls: fc on the global-average-pooled feature; top1/top5 are at the best-top-1 epoch."""
    di, tc, train_set, val_set = _setup(cfg, ctx)
    model, reference = frozen_backbone(backbone, cfg, di.device)
    torch.manual_seed(int(cfg.seed))
    heads = Heads({"gap": linear_layer(stage_channels(model)["gap"], int(cfg.data.num_classes),
                                       float(cfg.head.init_std))})
    result = train_heads(extract=lambda x: {"gap": model(x)}, heads=heads, backbone=model, reference=reference,
                         train_set=train_set, val_set=val_set, tc=tc, num_classes=int(cfg.data.num_classes),
                         out_dir=ctx.out_dir, di=di, workers=ctx.workers, source=_source(cfg), stage=ctx.stage,
                         fingerprint=fingerprint(backbone, cfg, di.world_size))
    return EvalOutput(metrics=_metrics(result["summary"], prefix=False), details=_details(result, tc, di),
                      info=_info(cfg, "gap"))


def _mhead(backbone, cfg: DictConfig, di):
    """The frozen model, its feature taps and the freshly initialized heads of a multi-head config."""
    if int(cfg.transforms.train.crop) != int(cfg.transforms.val.crop):
        raise ConfigError(f"{_source(cfg)}: train and val crops differ; the pooled feature sizes would not match")
    model, reference = frozen_backbone(backbone, cfg, di.device)
    layers = list(cfg.features.layers)
    taps = FeatureTaps(model, layers, resolved(cfg)["features"]["pooling"])
    dims = taps.dims(int(cfg.transforms.val.crop))
    torch.manual_seed(int(cfg.seed))
    h = cfg.head
    heads = norm_linear_heads(layers, dims, stage_channels(model), int(cfg.data.num_classes),
                              affine=bool(h.norm_affine), momentum=float(h.norm_momentum), eps=float(h.norm_eps),
                              init_std=float(h.init_std))
    return model, reference, taps, heads


@EVALUATORS.register("mhead_linear")
def mhead_linear(backbone, cfg: DictConfig, ctx: EvalContext) -> EvalOutput:
    """BN + Linear heads on the pooled feature1..feature5, all trained from one frozen backbone pass per batch."""
    di, tc, train_set, val_set = _setup(cfg, ctx)
    model, reference, taps, heads = _mhead(backbone, cfg, di)
    result = train_heads(extract=taps, heads=heads, backbone=model, reference=reference, train_set=train_set,
                         val_set=val_set, tc=tc, num_classes=int(cfg.data.num_classes), out_dir=ctx.out_dir, di=di,
                         workers=ctx.workers, source=_source(cfg), stage=ctx.stage,
                         fingerprint=fingerprint(backbone, cfg, di.world_size))
    return EvalOutput(metrics=_metrics(result["summary"], prefix=True), details=_details(result, tc, di),
                      info=_info(cfg, "all"))


class _CachedFeatures(Dataset):
    """``({layer: feature row}, label)`` items over the feature cache: read into memory when it fits in
    ``in_memory_bytes`` (row-by-row reads of a memory map dominate an epoch of small heads), else memory-mapped."""

    def __init__(self, split, in_memory_bytes: int = 4 << 30):
        feats = split.features
        if sum(v.nbytes for v in feats.values()) <= in_memory_bytes:
            feats = {k: torch.from_numpy(np.array(v)) for k, v in feats.items()}
        self.feats, self.labels = feats, torch.as_tensor(split.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return {k: v[i] if torch.is_tensor(v) else torch.from_numpy(np.array(v[i])) for k, v in self.feats.items()}, \
            self.labels[i]


def _cache_request(cfg: DictConfig, device: torch.device) -> DictConfig:
    """The feature-cache request (``features.load_split``'s config) equal to this protocol's val preprocessing."""
    d = cfg.data
    if not (d.dataset == "imagefolder" or (d.dataset == "places205" and d.get("layout") == "folder")):
        raise ConfigError(f"{_source(cfg)}: the fast variant reads ImageFolder trees only (data.dataset imagefolder, "
                          f"or places205 with layout folder); got {d.dataset}")
    t = cfg.transforms
    precision = ("bf16" if device.type == "cpu" else "fp16") if cfg.amp else "fp32"
    return OmegaConf.create({
        "_source_": _source(cfg),
        "data": {"reader": "imagefolder", "root": str(d.root)},
        "transform": {"resize": int(t.val.resize), "crop": int(t.val.crop), "square": None,
                      "mean": list(t.mean), "std": list(t.std)},
        "features": {"layers": list(cfg.features.layers), "pooling": resolved(cfg)["features"]["pooling"],
                     "batch_size": int(cfg.optim.batch_size), "precision": precision,
                     "channels_last": bool(cfg.channels_last)},
    })


@EVALUATORS.register("mhead_linear_fast")
def mhead_linear_fast(backbone, cfg: DictConfig, ctx: EvalContext) -> EvalOutput:
    """Quick look: the multi-layer heads trained on cached features of the val transform (no augmentation).

    Not the protocol: its evaluator differs from the protocol's, so its results are never comparable, and they
    carry their own variant label so that tables keep them apart. The features come from the shared cache
    (``features.py``), so a second run skips the backbone.
    """
    di = dist_info(ctx.device)
    if di.world_size > 1:
        raise ConfigError(f"{_source(cfg)}: the fast variant runs in one process (it is meant for quick looks)")
    tc = TrainConfig.from_config(cfg)
    request = _cache_request(cfg, di.device)
    model, reference, _, heads = _mhead(backbone, cfg, di)
    with ctx.stage("features"):
        train = load_split(backbone, request, ctx.cache_dir, str(cfg.data.train), device=str(di.device),
                           workers=ctx.workers)
        val = load_split(backbone, request, ctx.cache_dir, str(cfg.data.val), device=str(di.device),
                         workers=ctx.workers)
    n = int(cfg.data.num_classes)
    if len(train.classes) != n or train.classes != val.classes:
        raise DataError(f"{cfg.data.root}: {len(train.classes)} train / {len(val.classes)} val classes; "
                        f"the config expects {n} in both")
    result = train_heads(extract=lambda feats: feats, heads=heads, backbone=model, reference=reference,
                         train_set=_CachedFeatures(train), val_set=_CachedFeatures(val), tc=tc, num_classes=n,
                         out_dir=ctx.out_dir, di=di, workers=0, source=_source(cfg), stage=ctx.stage,
                         fingerprint=fingerprint(backbone, cfg, di.world_size))
    details = _details(result, tc, di)
    details["feature_cache"] = {"train": train.cache, "val": val.cache}
    return EvalOutput(metrics=_metrics(result["summary"], prefix=True), details=details,
                      info=_info(cfg, "all", extra_variant=FAST_VARIANT))
