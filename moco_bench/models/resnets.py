"""Backbones by name: torchvision's ResNets, and small-image variants of them in torchvision's layout.

Every part of the suite that builds a network from an architecture name (the MoCo encoders, the converter's
random baseline and its loading, the frozen and linear evaluators, the detection transfer) goes through
:func:`build`, so a name means the same network everywhere.

Small-image variants (:data:`SMALL_IMAGE`) are the CIFAR-style ResNets of small-image self-supervised recipes
(the MoCo authors' CIFAR-10 notebook, solo-learn, lightly): the stem is one 3x3 stride-1 convolution (padding 1)
and there is no max-pool, so a 32 px input keeps 32x32 maps in ``layer1`` and a 4x4 map in ``layer4`` (a
torchvision stem leaves 8x8 and 1x1). ``width`` sets the stem's and ``layer1``'s channels (torchvision: 64);
``layer2..4`` double it each time. Module and parameter names are torchvision's (``conv1``, ``bn1``,
``layer1.0.conv1`` ...; ``maxpool`` is an ``nn.Identity``), so state dicts carry the same keys as the base
architecture's, with other shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

# The torchvision ResNets the converter recognizes.
TORCHVISION_ARCHS = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "wide_resnet50_2", "wide_resnet101_2",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
)
_LAYERS = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet34": (BasicBlock, [3, 4, 6, 3]),
           "resnet50": (Bottleneck, [3, 4, 6, 3])}


@dataclass(frozen=True)
class SmallImageVariant:
    """A torchvision ResNet (``base``: its block type and blocks per stage) with a 3x3 stride-1 stem, no
    max-pool and ``width`` channels in the stem and ``layer1``."""

    base: str
    width: int
    why: str

    @property
    def stem(self) -> str:
        return f"3x3 stride-1 stem of {self.width} channels, no max-pool"


SMALL_IMAGE = {
    "resnet18_small_w0.5": SmallImageVariant(
        "resnet18", 32, "the demo's backbone: at 32 px a torchvision stem leaves layer4 a 1x1 map, and random "
        "features of that network are about as good as MoCo's after minutes of pretraining (issue 13)"),
    "resnet18_small_w0.25": SmallImageVariant(
        "resnet18", 16, "a quarter-width demo backbone (stage widths 16/32/64/128): about 4x the training images/s "
        "of resnet18_small_w0.5 on 2 CPU cores without bf16 hardware (issue 30)"),
}
ARCHS = TORCHVISION_ARCHS + tuple(SMALL_IMAGE)


class SmallImageResNet(ResNet):
    """torchvision's ResNet with a 3x3 stride-1 stem (padding 1), ``maxpool = Identity`` and stage widths
    ``width, 2 width, 4 width, 8 width``; ``forward`` and every module name are torchvision's."""

    def __init__(self, block: type, layers: list[int], width: int, num_classes: int = 1000,
                 norm_layer: Optional[Callable[..., nn.Module]] = None):
        nn.Module.__init__(self)  # ResNet.__init__ fixes 64 channels and the 7x7 stem: its steps, with a width
        self._norm_layer = norm_layer or nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = self._norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        for m in self.modules():  # torchvision's initialization
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def build(arch: str, num_classes: int = 1000, norm_layer: Optional[Callable[..., nn.Module]] = None,
          device: str | torch.device | None = None) -> nn.Module:
    """A randomly initialized network: a small-image variant by its name, else ``torchvision.models.<arch>``
    (any torchvision classification model; the converter and the evaluators accept the ResNets of :data:`ARCHS`).
    ``norm_layer`` replaces BatchNorm2d (MoCo's shuffle-BN groups)."""
    kwargs = {"norm_layer": norm_layer} if norm_layer is not None else {}
    with torch.device(device or "cpu"):
        if arch in SMALL_IMAGE:
            variant = SMALL_IMAGE[arch]
            block, layers = _LAYERS[variant.base]
            return SmallImageResNet(block, layers, variant.width, num_classes=num_classes, **kwargs)
        try:
            return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
        except ValueError as e:  # torchvision: "Unknown model name"
            raise ValueError(f"unknown architecture {arch!r}: {e}; moco-bench's own: {', '.join(SMALL_IMAGE)}") \
                from None


def stem_stride(arch: str) -> int:
    """Input pixels per ``layer1`` pixel: 4 for torchvision's stem (stride-2 conv and max-pool), 1 for a
    small-image variant."""
    return 1 if arch in SMALL_IMAGE else 4


def describe(arch: str) -> str:
    """One line saying what the architecture is."""
    variant = SMALL_IMAGE.get(arch)
    if variant is None:
        return f"torchvision {arch}"
    widths = "/".join(str(variant.width * 2 ** i) for i in range(4))
    return f"{arch}: moco-bench's small-image {variant.base} ({variant.stem}; stage widths {widths})"
