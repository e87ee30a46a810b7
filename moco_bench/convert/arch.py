"""Which torchvision ResNet a state dict belongs to, read from its tensors' shapes.

Each candidate's signature comes from torchvision itself (the model built on the meta device, so no
memory is spent), never from a hand-written table of widths and depths: the block type (BasicBlock has no
``conv3``), the number of blocks per stage (18/34 vs 50/101/152) and the shape of the first 3x3 conv
(its width and groups tell wide_resnet and resnext from resnet).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import torch
import torchvision

from moco_bench.core.errors import CheckpointError

ARCHS = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "wide_resnet50_2", "wide_resnet101_2",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
)
CLASSIFIER_KEYS = ("fc.weight", "fc.bias")
_STAGES = ("layer1", "layer2", "layer3", "layer4")


def build_resnet(arch: str, device: str | torch.device | None = None) -> torch.nn.Module:
    """A randomly initialized ``torchvision.models.<arch>``."""
    if arch not in ARCHS:
        raise CheckpointError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    with torch.device(device or "cpu"):
        return getattr(torchvision.models, arch)(weights=None)


@lru_cache(maxsize=None)
def expected_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the torchvision backbone (classifier excluded), in torchvision's key order."""
    state = build_resnet(arch, device="meta").state_dict()
    return {k: tuple(v.shape) for k, v in state.items() if k not in CLASSIFIER_KEYS}


def _signature(shapes: Mapping[str, tuple[int, ...]]) -> tuple | None:
    if "conv1.weight" not in shapes or "layer1.0.conv2.weight" not in shapes:
        return None
    depths = []
    for stage in _STAGES:
        blocks = {int(k.split(".")[1]) for k in shapes if k.startswith(stage + ".") and k.split(".")[1].isdigit()}
        if not blocks:
            return None
        depths.append(max(blocks) + 1)
    block = "Bottleneck" if "layer1.0.conv3.weight" in shapes else "BasicBlock"
    return block, tuple(depths), tuple(shapes["layer1.0.conv2.weight"])


@lru_cache(maxsize=1)
def _signatures() -> dict[tuple, str]:
    return {_signature(expected_shapes(arch)): arch for arch in ARCHS}


def detect_arch(state: Mapping[str, torch.Tensor], source: str) -> str:
    """The torchvision architecture whose structure the backbone tensors have.

    Raises:
        CheckpointError: the tensors are not a torchvision-style ResNet, or a ResNet of no known variant.
    """
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    signature = _signature(shapes)
    if signature is None:
        raise CheckpointError(
            f"{source}: the backbone is not a ResNet: expected conv1.weight and blocks layer1.* .. layer4.*, "
            f"found keys like {_prefix_summary(shapes)}")
    if signature not in _signatures():
        block, depths, conv2 = signature
        raise CheckpointError(
            f"{source}: a ResNet with {block}s, blocks per stage {list(depths)} and layer1.0.conv2 of shape "
            f"{list(conv2)} matches no torchvision architecture ({', '.join(ARCHS)})")
    return _signatures()[signature]


def _prefix_summary(keys, limit: int = 12) -> str:
    prefixes = sorted({".".join(k.split(".")[:2]) for k in keys})
    more = f" and {len(prefixes) - limit} more" if len(prefixes) > limit else ""
    return ", ".join(prefixes[:limit]) + more if prefixes else "(no tensors)"
