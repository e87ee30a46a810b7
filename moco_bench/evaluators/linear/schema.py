"""Schemas of the linear protocols: main_lincls, the multi-layer heads (mmselfsup, vissl), the fast variant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from moco_bench.core.schema import MAX_SIDE, MISSING, field
from moco_bench.evaluators.schema import Data, Evaluation, Features, Transform, register_evaluator


@dataclass
class Lighting:
    alphastd: float = field(min=0)
    eigval: List[float] = MISSING
    eigvec: List[List[float]] = MISSING


@dataclass
class TrainTransform:
    kind: str = field(choices=("random_resized_crop", "resize_random_crop"))
    crop: int = field(min=1, max=MAX_SIDE)
    scale: Optional[List[float]] = field(None, min=0, max=1, each=True)  # random_resized_crop
    resize: Optional[int] = field(None, min=1, max=MAX_SIDE)  # resize_random_crop
    jitter: Optional[List[float]] = field(None, min=0, each=True)
    lighting: Optional[Lighting] = None


@dataclass
class LinearTransform(Transform):
    train: TrainTransform = MISSING


@dataclass
class Head:
    norm: bool = MISSING  # BatchNorm over the channels of the pooled map before the Linear (multi-head)
    norm_affine: bool = MISSING
    norm_momentum: float = field(min=0, max=1)
    norm_eps: float = field(min=0)
    init_std: float = field(min=0)


@dataclass
class Optim:
    lr: float = field(min=0)
    lr_scaling: str = field(choices=("none", "linear"))
    base_batch: int = field(min=1)
    batch_size: int = field(min=1)  # global, over all processes
    momentum: float = field(min=0, max=1)
    weight_decay: float = field(min=0)
    norm_weight_decay: float = field(min=0)
    nesterov: bool = MISSING


@dataclass
class Schedule:
    epochs: int = field(min=1)
    milestones: List[int] = field(min=1, each=True)
    gamma: float = field(min=0, max=1)
    val_every: int = field(min=1)


@dataclass
class LinearEvaluation(Evaluation):
    arch: str = MISSING  # the architecture the pooling is set up for; a checkpoint of another is refused
    seed: int = MISSING
    data: Data = MISSING
    transform: LinearTransform = MISSING
    features: Features = MISSING
    head: Head = MISSING
    optim: Optim = MISSING
    schedule: Schedule = MISSING


def _linear():
    from moco_bench.evaluators.linear.linear import linear_heads

    return linear_heads


def _mhead_linear_fast():
    from moco_bench.evaluators.linear.linear import mhead_linear_fast

    return mhead_linear_fast


# One implementation for linear and mhead_linear: the heads (head.norm, features.layers) make the difference.
register_evaluator("linear", LinearEvaluation, _linear, per_gpu_processes=True, takes_pixels=True)
register_evaluator("mhead_linear", LinearEvaluation, _linear, per_gpu_processes=True)
register_evaluator("mhead_linear_fast", LinearEvaluation, _mhead_linear_fast)
