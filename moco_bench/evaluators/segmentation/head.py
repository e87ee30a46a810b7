"""The MoCo paper's semantic segmentation head, registered in detectron2's ``SEM_SEG_HEADS_REGISTRY``.

MoCo v1 appendix: on the stride-16 output of an R50 whose res5 3x3 convolutions have dilation 2 and stride 1,
two 3x3 convolutions of 256 channels with BN and ReLU and dilation 6 (DeepLab's large field of view), then a 1x1
convolution classifying each pixel (FCN-16s). Every number comes from the config (``MODEL.SEM_SEG_HEAD``:
NUM_CONVS, CONVS_DIM, DILATION, NORM, COMMON_STRIDE), which :func:`add_head_config` extends with the two keys
detectron2 lacks.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from fvcore.nn import weight_init
from torch import nn

HEAD = "MoCoFCNHead"


def add_head_config(cfg) -> None:
    """The keys the head reads that detectron2 has not; unset (None) until a protocol YAML sets them."""
    cfg.MODEL.SEM_SEG_HEAD.NUM_CONVS = None
    cfg.MODEL.SEM_SEG_HEAD.DILATION = None


class MoCoFCNHead(nn.Module):
    """Dilated 3x3 conv-norm-ReLU layers, a 1x1 classifier, and logits brought to the input's pixel grid.

    Feature ``j`` of a stride-``s`` ResNet is centred on input pixel ``s * j``; the logits are interpolated so
    that pixel ``i`` reads feature position ``i / s`` (DeepLab's corner-aligned resize), one grid for training
    and inference, then cut to the targets (training) or left for detectron2's ``sem_seg_postprocess`` to cut
    to the image (inference). Training loss: cross-entropy over the labelled pixels.
    """

    @configurable
    def __init__(self, *, in_feature: str, in_channels: int, num_classes: int, num_convs: int, conv_dims: int,
                 dilation: int, norm: str, stride: int, ignore_value: int, loss_weight: float):
        super().__init__()
        self.in_feature, self.stride = in_feature, stride
        self.ignore_value, self.loss_weight = ignore_value, loss_weight
        layers = []
        for k in range(num_convs):
            conv = Conv2d(in_channels if k == 0 else conv_dims, conv_dims, kernel_size=3, padding=dilation,
                          dilation=dilation, bias=not norm, norm=get_norm(norm, conv_dims), activation=F.relu)
            weight_init.c2_msra_fill(conv)
            layers.append(conv)
        self.convs = nn.Sequential(*layers)
        self.predictor = Conv2d(conv_dims if num_convs else in_channels, num_classes, kernel_size=1)
        weight_init.c2_msra_fill(self.predictor)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        unset = [k for k in ("NUM_CONVS", "DILATION") if head.get(k) is None]
        if unset:
            raise ValueError(f"MODEL.SEM_SEG_HEAD.{', '.join(unset)} must be set for {HEAD} (the protocol's YAML)")
        (in_feature,) = head.IN_FEATURES
        if input_shape[in_feature].stride != head.COMMON_STRIDE:
            raise ValueError(f"{in_feature} has stride {input_shape[in_feature].stride}, but "
                             f"MODEL.SEM_SEG_HEAD.COMMON_STRIDE is {head.COMMON_STRIDE}")
        return {"in_feature": in_feature, "in_channels": input_shape[in_feature].channels,
                "num_classes": head.NUM_CLASSES, "num_convs": head.NUM_CONVS, "conv_dims": head.CONVS_DIM,
                "dilation": head.DILATION, "norm": head.NORM, "stride": head.COMMON_STRIDE,
                "ignore_value": head.IGNORE_VALUE, "loss_weight": head.LOSS_WEIGHT}

    def forward(self, features: Dict[str, torch.Tensor], targets: torch.Tensor | None = None):
        logits = self.predictor(self.convs(features[self.in_feature]))
        h, w = logits.shape[-2:]
        s = self.stride
        logits = F.interpolate(logits, size=((h - 1) * s + 1, (w - 1) * s + 1), mode="bilinear", align_corners=True)
        logits = F.pad(logits, (0, s - 1, 0, s - 1), mode="replicate")  # the last feature's cell: h * s pixels
        if not self.training:
            return logits, {}
        logits = logits[..., : targets.shape[-2], : targets.shape[-1]]
        loss = F.cross_entropy(logits, targets, reduction="mean", ignore_index=self.ignore_value)
        return None, {"loss_sem_seg": loss * self.loss_weight}


if HEAD not in SEM_SEG_HEADS_REGISTRY:
    SEM_SEG_HEADS_REGISTRY.register(MoCoFCNHead)
