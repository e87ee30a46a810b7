"""Feature taps on a torchvision ResNet: ``gap`` and the pooled ``feature1`` .. ``feature5`` of the protocols.

``feature1`` is the stem after conv1/bn1/relu (before the max-pool, so 112x112 at 224 px input); ``feature2`` ..
``feature5`` are the outputs of ``layer1`` .. ``layer4`` (res2 .. res5); ``gap`` is the global average of
``layer4``, the 2048-d vector of linear and kNN evaluation. Each tapped map is average-pooled as its spec says,
then flattened. The pooling numbers are protocol constants and live in the evaluation configs.

:class:`Pixels` stands for "no network" (the ``pixels:`` reference line of the demo): its only layer is ``gap``,
which there is the flattened, normalized input image itself (3 x 32 x 32 = 3,072 values at 32 px), not pooled.
"""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

import torch
from torch import nn

from moco_bench.core.errors import ConfigError

LAYERS = ("feature1", "feature2", "feature3", "feature4", "feature5", "gap")
_DEPTH = {"feature1": 0, "feature2": 1, "feature3": 2, "feature4": 3, "feature5": 4, "gap": 4}


def build_pool(layer: str, spec: Mapping) -> nn.Module:
    """``{kernel, stride, padding}`` -> AvgPool2d (zero padding counted, as nn.AvgPool2d and the anchors do);
    ``{output_size}`` -> AdaptiveAvgPool2d."""
    keys = set(spec)
    if keys == {"output_size"}:
        return nn.AdaptiveAvgPool2d(int(spec["output_size"]))
    if {"kernel", "stride"} <= keys <= {"kernel", "stride", "padding"}:
        return nn.AvgPool2d(int(spec["kernel"]), int(spec["stride"]), int(spec.get("padding", 0)))
    raise ConfigError(f"pooling for {layer}: expected {{kernel, stride, padding}} or {{output_size}}, "
                      f"got keys {sorted(keys)}")


class Pixels(nn.Module):
    """The identity "backbone" of the ``pixels:`` reference: features are the input image, flattened."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, 1)


class FeatureTaps(nn.Module):
    """Runs a ResNet only as deep as the requested layers need and returns ``{layer: (N, D) features}``."""

    def __init__(self, resnet: nn.Module, layers: Sequence[str], pooling: Mapping[str, Mapping]):
        super().__init__()
        unknown = [name for name in layers if name not in LAYERS]
        if unknown:
            raise ConfigError(f"unknown feature layer(s) {unknown}; known: {', '.join(LAYERS)}")
        missing = [name for name in layers if name not in pooling]
        if missing:
            raise ConfigError(f"no pooling spec for layer(s) {missing} (features.pooling in the config)")
        if isinstance(resnet, Pixels) and set(layers) - {"gap"}:
            raise ConfigError(f"raw pixels have no layers {sorted(set(layers) - {'gap'})}: their only feature is "
                              "gap, the flattened image (run pixels: with the kNN and linear protocols)")
        self.resnet = resnet
        self.layers = list(layers)
        self.pools = nn.ModuleDict({name: build_pool(name, pooling[name]) for name in self.layers})
        self.depth = max(_DEPTH[name] for name in self.layers)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        r = self.resnet
        if isinstance(r, Pixels):
            return {"gap": r(x)}  # no pooling: the image is the feature
        maps = {"feature1": r.relu(r.bn1(r.conv1(x)))}
        x = r.maxpool(maps["feature1"])
        for i, stage in enumerate((r.layer1, r.layer2, r.layer3, r.layer4)[: self.depth], start=2):
            x = stage(x)
            maps[f"feature{i}"] = x
        out = {}
        for name in self.layers:
            source = maps["feature5" if name == "gap" else name]
            out[name] = torch.flatten(self.pools[name](source), 1)
        return out

    @torch.no_grad()
    def dims(self, input_size: int) -> Dict[str, int]:
        """Feature length per layer for square inputs of ``input_size`` pixels (a dry run on one blank image);
        raises ConfigError when a pooling kernel is larger than its (padded) map."""
        modes = {m: m.training for m in self.modules()}  # each module's own: a frozen backbone stays in eval
        self.eval()
        try:
            param = next(self.resnet.parameters(), torch.zeros(()))
            with torch.no_grad():
                out = self(torch.zeros(1, 3, input_size, input_size, dtype=param.dtype, device=param.device))
        except RuntimeError as e:  # AvgPool2d: "Output size is too small" / kernel larger than input
            raise ConfigError(f"pooling spec does not fit {input_size}px inputs: {e}") from None
        finally:
            for module, training in modes.items():
                module.training = training
        return {name: int(v.shape[1]) for name, v in out.items()}


def stage_channels(resnet: nn.Module) -> Dict[str, int]:
    """Channels of the maps the taps read: stem (``feature1``), ``layer1..4`` (``feature2..5``), ``gap``."""
    out = {"feature1": resnet.conv1.out_channels}
    for i, stage in enumerate((resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4), start=2):
        # The last block of a stage has no downsample branch, so its last conv sets the stage's width.
        out[f"feature{i}"] = [m for m in stage[-1].modules() if isinstance(m, nn.Conv2d)][-1].out_channels
    out["gap"] = out["feature5"]
    return out
