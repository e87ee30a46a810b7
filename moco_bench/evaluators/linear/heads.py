"""Classifier heads trained on a frozen backbone.

- main_lincls (facebookresearch/moco): one ``fc`` on the global-average-pooled feature, N(0, 0.01) weights, zero bias.
- Multi-layer heads (mmselfsup ``MultiClsHead``, vissl ``eval_mlp``): per tapped layer, BatchNorm over the
  channels of the pooled map (no affine in mmselfsup, affine in vissl), then a Linear on the flattened map.
"""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

import torch
from torch import nn


def linear_layer(in_dim: int, num_classes: int, init_std: float) -> nn.Linear:
    """A Linear initialized as both anchors do: weights N(0, init_std), bias 0."""
    fc = nn.Linear(in_dim, num_classes)
    nn.init.normal_(fc.weight, mean=0.0, std=init_std)
    nn.init.zeros_(fc.bias)
    return fc


class NormLinear(nn.Module):
    """BatchNorm over the ``channels`` of a flattened ``(C, h, w)`` pooled map, then Linear.

    Taps return ``(N, C*h*w)`` flattened channel-major, so viewing it as ``(N, C, h*w)`` and normalizing with
    BatchNorm1d(C) equals BatchNorm2d on the map, which is what both anchors apply before flattening.
    """

    def __init__(self, channels: int, in_dim: int, num_classes: int, affine: bool, momentum: float, eps: float,
                 init_std: float):
        super().__init__()
        if in_dim % channels:
            raise ValueError(f"feature length {in_dim} is not a multiple of its {channels} channels")
        self.channels = channels
        self.norm = nn.BatchNorm1d(channels, eps=eps, momentum=momentum, affine=affine)
        self.fc = linear_layer(in_dim, num_classes, init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x.view(x.shape[0], self.channels, -1))
        return self.fc(torch.flatten(x, 1))


class Heads(nn.Module):
    """One head per feature layer; ``forward({layer: features}) -> {layer: logits}``."""

    def __init__(self, heads: Mapping[str, nn.Module]):
        super().__init__()
        self.heads = nn.ModuleDict(dict(heads))

    def forward(self, feats: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {name: head(feats[name]) for name, head in self.heads.items()}


def norm_linear_heads(layers: Sequence[str], dims: Mapping[str, int], channels: Mapping[str, int], num_classes: int,
                      affine: bool, momentum: float, eps: float, init_std: float) -> Heads:
    return Heads({name: NormLinear(channels[name], dims[name], num_classes, affine, momentum, eps, init_std)
                  for name in layers})
