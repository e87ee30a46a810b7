"""The MoCo paper's R50-dilated-C5 backbone for Faster R-CNN on VOC (MoCo v1, arXiv 1911.05722, appendix A.1).

The paper's backbone is the ResNet up to conv5 with that stage dilated (dilation 2, stride 1, so the map keeps
stride 16), "followed by a 3x3 convolution (with BN) that reduces dimension to 512"; the RPN and the box head
(two hidden fully-connected layers) read that 512-channel map. detectron2's own DC5 (model_zoo
Base-RCNN-DilatedC5.yaml) feeds the 2048-channel res5 to both, so its first fc takes 2048 x 7 x 7 inputs instead
of 512 x 7 x 7: another detector.

Registered in detectron2's ``BACKBONE_REGISTRY`` as ``build_resnet_dilated_c5_backbone``; the config key
``MODEL.DILATED_C5.OUT_CHANNELS`` (added by :func:`add_dilated_c5_config`) holds the reduced width, the norm is
``MODEL.RESNETS.NORM`` (the one the whole transfer trains). The ResNet is detectron2's own builder under
``bottom_up``, so the converted weights land there by detectron2's matching heuristics with nothing missing or
unexpected. The reduction conv is initialized as detectron2 initializes its ResNet convs (``c2_msra_fill``:
He normal, fan-out, no bias) and its BN at weight 1, bias 0, running mean 0, variance 1.

Importing this module imports detectron2.
"""

from __future__ import annotations

import fvcore.nn.weight_init as weight_init
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling.backbone import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.resnet import build_resnet_backbone

OUTPUT = "c5_reduced"  # the name the RPN and ROI heads read (MODEL.RPN/ROI_HEADS.IN_FEATURES)


def add_dilated_c5_config(cfg: CfgNode) -> None:
    """Add ``MODEL.DILATED_C5.OUT_CHANNELS`` to a detectron2 config (a protocol file sets its value)."""
    cfg.MODEL.DILATED_C5 = CfgNode({"OUT_CHANNELS": 512})


class DilatedC5(Backbone):
    """A ResNet whose res5 is dilated, then a 3x3 conv + norm + ReLU to ``out_channels``; one output, stride 16."""

    def __init__(self, bottom_up: Backbone, out_channels: int, norm: str):
        super().__init__()
        (res5, shape), = bottom_up.output_shape().items()
        if res5 != "res5" or shape.stride != 16:
            raise ValueError(f"a dilated-C5 backbone needs res5 as the only ResNet output at stride 16 (dilation 2), "
                             f"got {res5} at stride {shape.stride}")
        self.bottom_up = bottom_up
        self.reduce = Conv2d(shape.channels, out_channels, kernel_size=3, padding=1, bias=False,
                             norm=get_norm(norm, out_channels))
        weight_init.c2_msra_fill(self.reduce)
        self._out_features = [OUTPUT]
        self._shape = ShapeSpec(channels=out_channels, stride=shape.stride)

    def forward(self, x):
        return {OUTPUT: F.relu_(self.reduce(self.bottom_up(x)["res5"]))}

    def output_shape(self):
        return {OUTPUT: self._shape}


@BACKBONE_REGISTRY.register()
def build_resnet_dilated_c5_backbone(cfg, input_shape):
    """detectron2's ResNet (``MODEL.RESNETS``, ``RES5_DILATION`` 2, ``OUT_FEATURES`` [res5]) + :class:`DilatedC5`."""
    return DilatedC5(build_resnet_backbone(cfg, input_shape), int(cfg.MODEL.DILATED_C5.OUT_CHANNELS),
                     cfg.MODEL.RESNETS.NORM)
