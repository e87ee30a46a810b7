"""Which ResNet a state dict belongs to, read from its tensors' shapes (and the checkpoint's own record).

Each candidate's signature comes from the network the suite builds for it (:mod:`moco_bench.models.resnets`,
on the meta device, so no memory is spent), never from a hand-written table of widths and depths: the block
type (BasicBlock has no ``conv3``), the number of blocks per stage (18/34 vs 50/101/152), the shape of the first
3x3 conv (its width and groups tell wide_resnet and resnext from resnet, and half-width layers from full ones),
and the shape of ``conv1`` (a 3x3 stem from torchvision's 7x7). Candidates are torchvision's ResNets and the
suite's small-image variants (3x3 stride-1 stem, no max-pool), whose stride and max-pool leave no trace in the
tensors: a variant is told apart by its widths and its 3x3 ``conv1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import torch

from moco_bench.core.errors import CheckpointError
from moco_bench.models import resnets

ARCHS = resnets.ARCHS
CLASSIFIER_KEYS = ("fc.weight", "fc.bias")
_STAGES = ("layer1", "layer2", "layer3", "layer4")


def build_resnet(arch: str, device: str | torch.device | None = None) -> torch.nn.Module:
    """A randomly initialized ``arch`` as the suite builds it (:func:`moco_bench.models.resnets.build`)."""
    if arch not in ARCHS:
        raise CheckpointError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    return resnets.build(arch, device=device)


@lru_cache(maxsize=None)
def expected_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the backbone (classifier excluded), in torchvision's key order."""
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
def _candidates() -> dict[tuple, list[str]]:
    """Signature -> the architectures that have it (torchvision's first)."""
    out: dict[tuple, list[str]] = {}
    for arch in ARCHS:
        out.setdefault(_signature(expected_shapes(arch)), []).append(arch)
    return out


def _fits(shapes: Mapping[str, tuple[int, ...]], arch: str) -> bool:
    return all(shapes.get(k) == v for k, v in expected_shapes(arch).items())


def recognize_arch(state: Mapping[str, torch.Tensor], source: str, declared: str | None = None) -> tuple[str, str]:
    """The architecture whose structure the backbone tensors have, and how it was recognized (for the report).

    ``declared``: the architecture the checkpoint's own metadata names (moco-bench's and main_moco.py's
    ``arch``), used where the tensors fit it, and else said in the note beside the architecture the tensors are.
    Among architectures of one signature, the one whose ``conv1`` shape the tensors have is taken.

    Raises:
        CheckpointError: the tensors are not a torchvision-style ResNet, or a ResNet of no known variant.
    """
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    signature = _signature(shapes)
    if signature is None:
        raise CheckpointError(
            f"{source}: the backbone is not a ResNet: expected conv1.weight and blocks layer1.* .. layer4.*, "
            f"found keys like {_prefix_summary(shapes)}")
    candidates = _candidates().get(signature)
    if candidates is None:
        block, depths, conv2 = signature
        raise CheckpointError(
            f"{source}: a ResNet with {block}s, blocks per stage {list(depths)} and layer1.0.conv2 of shape "
            f"{list(conv2)} matches no known architecture ({', '.join(ARCHS)})")
    if declared in candidates and _fits(shapes, declared):
        return declared, f"the checkpoint's arch field, which its tensors fit ({resnets.describe(declared)})"
    stem = [a for a in candidates if expected_shapes(a)["conv1.weight"] == shapes.get("conv1.weight")]
    arch = (stem or candidates)[0]
    how = f"recognized from the tensors (conv1 {list(shapes['conv1.weight'])}, layer1.0.conv2 {list(signature[2])})"
    if arch in resnets.SMALL_IMAGE:
        how = f"{resnets.describe(arch)}; {how}"
    if declared and declared != arch:
        how += f"; the checkpoint's arch field says {declared!r}, which its tensors are not"
    return arch, how


def detect_arch(state: Mapping[str, torch.Tensor], source: str) -> str:
    """The architecture whose structure the backbone tensors have (:func:`recognize_arch` without metadata)."""
    return recognize_arch(state, source)[0]


def declared_arch(ckpt: Mapping) -> str | None:
    """The architecture a checkpoint's metadata names, if it is one the suite knows: ``arch`` (moco-bench's
    pretraining and main_moco.py) or ``config.model.arch`` (moco-bench's recorded config)."""
    config = ckpt.get("config")
    model = config.get("model") if isinstance(config, Mapping) else None
    for value in (ckpt.get("arch"), model.get("arch") if isinstance(model, Mapping) else None):
        if isinstance(value, str) and value in ARCHS:
            return value
    return None


def _prefix_summary(keys, limit: int = 12) -> str:
    prefixes = sorted({".".join(k.split(".")[:2]) for k in keys})
    more = f" and {len(prefixes) - limit} more" if len(prefixes) > limit else ""
    return ", ".join(prefixes[:limit]) + more if prefixes else "(no tensors)"
