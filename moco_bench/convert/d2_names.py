"""detectron2 backbone key names <-> torchvision ResNet key names (MoCo's convert-pretrain-to-detectron2.py rules)."""

from __future__ import annotations

import re


def detectron2_key(key: str) -> str:
    """MoCo's rules: stem keys get ``stem.``, layerN -> res(N+1), bnN -> convN.norm, downsample -> shortcut."""
    if "layer" not in key:
        key = "stem." + key
    for t in (1, 2, 3, 4):
        key = key.replace(f"layer{t}", f"res{t + 1}")
    for t in (1, 2, 3):
        key = key.replace(f"bn{t}", f"conv{t}.norm")
    return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


_BLOCK = re.compile(r"^res([2-5])\.(\d+)\.(.+)$")


def torchvision_key(key: str) -> str:
    """The inverse of :func:`detectron2_key`; a key it does not produce is returned unchanged (and then
    reported as unexpected, since no torchvision key has that name)."""
    if key.startswith("stem.conv1."):
        rest = key[len("stem.conv1."):]
        name = "bn1." + rest[len("norm."):] if rest.startswith("norm.") else "conv1." + rest
    elif match := _BLOCK.match(key):
        stage, block, rest = match.groups()
        rest = re.sub(r"^conv([1-3])\.norm\.", r"bn\1.", rest)
        rest = re.sub(r"^shortcut\.norm\.", "downsample.1.", rest)
        rest = re.sub(r"^shortcut\.", "downsample.0.", rest)
        name = f"layer{int(stage) - 1}.{block}.{rest}"
    else:
        return key
    return name if detectron2_key(name) == key else key
