"""detectron2 backbones for the small-image ResNets (moco_bench.models.resnets.SMALL_IMAGE): a 3x3 stride-1 stem
without max-pool, and stage widths detectron2's own builder refuses for BasicBlock nets (it asserts 64 res2
channels for R18/R34).

Registered in detectron2's ``BACKBONE_REGISTRY`` as :data:`SMALL_IMAGE_BACKBONES` (plain and FPN). The module
names are detectron2's (``stem.conv1`` with its ``norm``, ``res2`` .. ``res5``), so the weights the converter
writes (MoCo's renaming rules) load with no missing or unexpected backbone key. With a stride-1 stem, ``res2``
.. ``res5`` have strides 1, 2, 4, 8 and an FPN names its levels after them (``p0`` .. ``p3``, ``p4`` from the top
block): :func:`check_fpn_levels` holds a config's level names against them before anything is built
(evaluate/detectron2/Demo-RCNN-FPN-small-image.yaml has the demo's).

Importing this module imports detectron2.
"""

from __future__ import annotations

import math
from typing import List

import fvcore.nn.weight_init as weight_init
import torch.nn.functional as F
from detectron2.layers import CNNBlockBase, Conv2d, get_norm
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock, ResNet

from moco_bench.core.errors import ConfigError
from moco_bench.models import resnets

BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
# detectron2's builder -> the one with the small-image stem
SMALL_IMAGE_BACKBONES = {"build_resnet_backbone": "build_small_image_resnet_backbone",
                         "build_resnet_fpn_backbone": "build_small_image_resnet_fpn_backbone"}
DILATED_C5 = "build_resnet_dilated_c5_backbone"  # moco_bench/evaluators/detection/dilated_c5.py


class SmallImageStem(CNNBlockBase):
    """``conv1`` 3x3 stride 1 (padding 1) with its norm, then ReLU; no max-pool (stride 1)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 32, norm: str = "BN"):
        super().__init__(in_channels, out_channels, 1)
        self.conv1 = Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False,
                            norm=get_norm(norm, out_channels))
        weight_init.c2_msra_fill(self.conv1)

    def forward(self, x):
        return F.relu_(self.conv1(x))


def _stages(r) -> List[list]:
    """res2 .. res5 as detectron2's builder makes them (stride in the 3x3 conv as STRIDE_IN_1X1 says), any width."""
    depth = int(r.DEPTH)
    if r.RES5_DILATION != 1 or any(r.DEFORM_ON_PER_STAGE):
        raise ConfigError("the small-image ResNet backbone supports neither RES5_DILATION nor deformable convs")
    in_ch, out_ch, bottleneck = r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS, r.NUM_GROUPS * r.WIDTH_PER_GROUP
    stages = []
    for idx, n in enumerate(BLOCKS_PER_STAGE[depth]):
        kwargs = {"num_blocks": n, "stride_per_block": [1 if idx == 0 else 2] + [1] * (n - 1),
                  "in_channels": in_ch, "out_channels": out_ch, "norm": r.NORM}
        if depth in (18, 34):
            kwargs["block_class"] = BasicBlock
        else:
            kwargs.update(block_class=BottleneckBlock, bottleneck_channels=bottleneck,
                          stride_in_1x1=r.STRIDE_IN_1X1, num_groups=r.NUM_GROUPS)
        stages.append(ResNet.make_stage(**kwargs))
        in_ch, out_ch, bottleneck = out_ch, out_ch * 2, bottleneck * 2
    return stages


@BACKBONE_REGISTRY.register()
def build_small_image_resnet_backbone(cfg, input_shape):
    """A ResNet with :class:`SmallImageStem` and the widths of ``MODEL.RESNETS`` (STEM_OUT_CHANNELS,
    RES2_OUT_CHANNELS)."""
    r = cfg.MODEL.RESNETS
    stem = SmallImageStem(input_shape.channels, r.STEM_OUT_CHANNELS, r.NORM)
    return ResNet(stem, _stages(r), out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


@BACKBONE_REGISTRY.register()
def build_small_image_resnet_fpn_backbone(cfg, input_shape):
    """detectron2's ``build_resnet_fpn_backbone`` over :func:`build_small_image_resnet_backbone`; the top block
    pools the last level, whose name follows the strides (detectron2's LastLevelMaxPool reads ``p5``)."""
    bottom_up = build_small_image_resnet_backbone(cfg, input_shape)
    top = LastLevelMaxPool()
    top.in_feature = f"p{int(math.log2(bottom_up.output_shape()[cfg.MODEL.FPN.IN_FEATURES[-1]].stride))}"
    return FPN(bottom_up=bottom_up, in_features=cfg.MODEL.FPN.IN_FEATURES, out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
               norm=cfg.MODEL.FPN.NORM, top_block=top, fuse_type=cfg.MODEL.FPN.FUSE_TYPE)


def backbone_name(arch: str, name: str) -> str:
    """The detectron2 backbone builder for ``arch`` where the config names ``name``: detectron2's own for a
    torchvision stem, the registered small-image one otherwise. A dilated res5 needs bottleneck blocks
    (detectron2 dilates only those)."""
    if name == DILATED_C5 and (arch in resnets.SMALL_IMAGE or arch in ("resnet18", "resnet34")):
        raise ConfigError(f"{arch} has BasicBlocks (or a small-image stem); the dilated-C5 backbone ({name}) "
                          "dilates res5's bottleneck blocks: use a ResNet-50 or larger")
    if arch not in resnets.SMALL_IMAGE:
        return name
    if name not in SMALL_IMAGE_BACKBONES:
        raise ConfigError(f"{arch} has a 3x3 stride-1 stem without max-pool; detectron2 backbone {name} has no such "
                          f"variant (registered: {', '.join(SMALL_IMAGE_BACKBONES.values())})")
    return SMALL_IMAGE_BACKBONES[name]


def check_fpn_levels(d2, arch: str, source: str) -> None:
    """An FPN names its levels ``p<log2 stride>``; the RPN's and ROI heads' ``IN_FEATURES`` must be among the
    levels this ``arch`` gives (its stem sets the strides). Raises ConfigError naming both."""
    if not str(d2.MODEL.BACKBONE.NAME).endswith("fpn_backbone"):
        return
    stride = resnets.stem_stride(arch)
    levels = [int(math.log2(stride)) + int(name[len("res"):]) - 2 for name in d2.MODEL.FPN.IN_FEATURES]
    names = [f"p{n}" for n in levels + [max(levels) + 1]]  # + the top block's
    for key, wanted in (("MODEL.RPN.IN_FEATURES", d2.MODEL.RPN.IN_FEATURES),
                        ("MODEL.ROI_HEADS.IN_FEATURES", d2.MODEL.ROI_HEADS.IN_FEATURES)):
        unknown = [f for f in wanted if f not in names]
        if unknown:
            what = "is not a level" if len(unknown) == 1 else "are not levels"
            raise ConfigError(
                f"{source}: {key} {list(wanted)}: {', '.join(unknown)} {what} of this FPN: a {arch} (stem stride "
                f"{stride}) with FPN.IN_FEATURES {list(d2.MODEL.FPN.IN_FEATURES)} gives {', '.join(names)}")
    if "p0" in d2.MODEL.ROI_HEADS.IN_FEATURES:
        raise ConfigError(f"{source}: MODEL.ROI_HEADS.IN_FEATURES holds p0 (stride 1), which detectron2's ROIPooler "
                          "refuses (its lowest level must be at least 1): start the FPN at res3")
