"""Schema of a pretraining recipe (pretrain/*.yaml): which keys a recipe has, their types and ranges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from moco_bench.core.schema import MAX_SIDE, MISSING, NAME, field
from moco_bench.data.schema import Data, TestTransform


@dataclass
class Recipe:
    protocol: str = field(pattern=NAME)  # the shipped recipe file this run derives from (pretrain/<protocol>.yaml)
    method: Optional[str] = None  # the method column of results/published/numbers.csv (MoCo v1, MoCo v2)
    pretrain_data: Optional[str] = None  # its pretrain_data column (IN-1M)
    free_keys: Dict[str, str] = field({})  # keys that leave the recipe as published, each with its reason


@dataclass
class PretrainData:
    reader: str = MISSING  # a reader of moco_bench.data.DATASETS (labels unused)
    root: str = MISSING
    split: str = MISSING
    batch_size: int = field(min=1)  # global, over all processes
    workers: int = field(min=0)  # DataLoader workers per process
    # augment PIL images in workers, or tensors on the device: image by image (tensor) or a batch at once (batched)
    pipeline: str = field(choices=("pil", "tensor", "batched"))


@dataclass
class Model:
    arch: str = MISSING
    dim: int = field(min=1)
    K: int = field(min=1)  # a multiple of the global batch
    m: float = field(min=0, max=1)
    T: float = field(min=1e-6)
    mlp: bool = MISSING
    bn_splits: int = field(min=1)


@dataclass
class Augment:
    kind: str = field(choices=("moco_v1", "moco_v2"))
    crop: int = field(min=1, max=MAX_SIDE)
    scale: List[float] = field(min=0, max=1, each=True)
    jitter: List[float] = field(min=0, each=True)
    grayscale_p: float = field(min=0, max=1)
    jitter_p: Optional[float] = field(None, min=0, max=1)  # moco_v2
    blur_sigma: Optional[List[float]] = field(None, min=0, each=True)  # moco_v2
    blur_p: Optional[float] = field(None, min=0, max=1)  # moco_v2
    mean: List[float] = MISSING
    std: List[float] = field(min=1e-6, each=True)


@dataclass
class Optim:
    epochs: int = field(min=1)
    lr: float = field(min=0)
    momentum: float = field(min=0, max=1)
    weight_decay: float = field(min=0)
    schedule: str = field(choices=("cos", "step"))
    milestones: List[int] = field(min=1, each=True)


@dataclass
class Compute:
    precision: str = field(choices=("fp32", "bf16", "fp16"))  # autocast of the steps; fp16 with a gradient scaler
    channels_last: bool = MISSING


@dataclass
class Log:
    every: int = field(min=1)
    tensorboard: bool = MISSING


@dataclass
class Monitor:
    knn_every: int = field(min=0)  # epochs between checks; 0 = off
    data: Data = MISSING
    test: TestTransform = MISSING
    k: int = field(min=1)
    T: float = field(min=1e-6)
    batch_size: int = field(min=1)


@dataclass
class PretrainConfig:
    _source_: str = ""
    version: int = MISSING
    name: str = field(pattern=NAME)
    output_dir: str = MISSING
    resume: Optional[str] = MISSING  # auto | a checkpoint path | null
    keep_checkpoints: Optional[int] = field(None, min=1)
    recipe: Recipe = MISSING
    seed: int = MISSING
    device: str = MISSING
    cpu_threads: Optional[int] = field(None, min=1)
    data: PretrainData = MISSING
    model: Model = MISSING
    transform: Augment = MISSING
    optim: Optim = MISSING
    compute: Compute = MISSING
    log: Log = MISSING
    monitor: Monitor = MISSING


def load_recipe(path, overrides=None):
    """A pretraining recipe, checked against :class:`PretrainConfig`."""
    from moco_bench.core.config import load_config

    return load_config(path, overrides, schema=PretrainConfig)
