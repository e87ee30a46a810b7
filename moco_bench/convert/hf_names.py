"""Hugging Face transformers ResNet key names -> torchvision ResNet key names.

transformers' ``ResNetModel`` (modeling_resnet.py) names the stem ``embedder.embedder.{convolution,
normalization}``, block M of stage N ``encoder.stages.N.layers.M``, its convolutions and their BatchNorms
``layer.K.{convolution,normalization}`` and its projection ``shortcut.{convolution,normalization}``;
``ResNetForImageClassification`` puts all of it under ``resnet.`` beside ``classifier.1``.
"""

from __future__ import annotations

import re

_BLOCK = re.compile(r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.(shortcut|layer\.(\d+))\."
                    r"(convolution|normalization)\.(\w+)$")
_STEM = re.compile(r"^embedder\.embedder\.(convolution|normalization)\.(\w+)$")


def torchvision_key(key: str) -> str:
    """The torchvision name of a transformers ResNet key (``resnet.`` already removed); a key of no other
    shape is returned unchanged, and then reported as unexpected."""
    if match := _STEM.match(key):
        part, param = match.groups()
        return f"{'conv1' if part == 'convolution' else 'bn1'}.{param}"
    if match := _BLOCK.match(key):
        stage, block, where, index, part, param = match.groups()
        prefix = f"layer{int(stage) + 1}.{block}"
        if where == "shortcut":
            return f"{prefix}.downsample.{0 if part == 'convolution' else 1}.{param}"
        return f"{prefix}.{'conv' if part == 'convolution' else 'bn'}{int(index) + 1}.{param}"
    return key
