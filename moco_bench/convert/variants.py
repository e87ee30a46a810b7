"""ResNets that are not torchvision's, refused by what they are whatever the flags.

Their tensors can come close enough to a torchvision ResNet's keys that a conversion loads (``--allow-missing``
fills the rest), yet the network computes something else: GroupNorm keeps no running statistics (timm's
``resnet50_gn``), a deep stem has three 3x3 convolutions (timm's ``resnet50d``), blocks may hold extra modules
(squeeze-and-excitation, attention), and some differ only where no tensor shows it (timm's ``resnetaa50``
average-pools before each stride; a transformers ResNet may stride in the first 1x1 convolution). The first
kinds are read from the tensors; the last from the name the file gives its network (timm's ``args.model``, the
``config.json`` that timm's and transformers' Hub savers write beside the weights).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from moco_bench.convert.arch import ARCHS
from moco_bench.core.errors import CheckpointError
from moco_bench.core.inert_pickle import Placeholder

_BLOCK_PARTS = {"conv1", "conv2", "conv3", "bn1", "bn2", "bn3", "downsample"}
_KNOWN_EXTRAS = {"se": "squeeze-and-excitation, as in timm's seresnet* and ecaresnet*",
                 "attn": "attention", "aa": "anti-aliasing, as in timm's resnetblur* and resnetaa*",
                 "gn1": "GroupNorm", "gn2": "GroupNorm", "gn3": "GroupNorm"}
_NORM = re.compile(r"^(bn1|layer\d+\.\d+\.(bn\d|downsample\.1))\.weight$")
_HUB_FILES = re.compile(r"^(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)$")


def check_tensors(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse a backbone (torchvision names) whose tensors belong to another kind of ResNet."""
    what = _deep_stem(state) or _avg_down(state) or _extra_modules(state) or _norm_without_statistics(state)
    if what:
        raise CheckpointError(f"{source}: not a torchvision ResNet: {what}; moco-bench converts torchvision's "
                              f"BatchNorm ResNets only (refused whatever the flags)")


def _deep_stem(state: Mapping) -> str:
    convs = sorted({k.split(".")[1] for k in state if re.match(r"^conv1\.\d+\.", k)})
    return f"a deep stem (conv1.{', conv1.'.join(convs)}: stacked 3x3 convolutions, as in timm's resnet*c, " \
           f"resnet*d, resnet*s and resnet*t) instead of one 7x7 conv1" if convs else ""


def _avg_down(state: Mapping) -> str:
    pooled = sorted(k.rsplit(".", 3)[0] for k, v in state.items()
                    if re.match(r"^layer\d+\.\d+\.downsample\.1\.weight$", k) and v.dim() == 4)
    return f"average-pool shortcuts ({pooled[0]}: pool, 1x1 conv, norm, as in timm's resnet*d)" if pooled else ""


def _extra_modules(state: Mapping) -> str:
    extras = sorted({".".join(k.split(".")[:3]) for k in state
                     if re.match(r"^layer\d+\.\d+\.", k) and k.split(".")[2] not in _BLOCK_PARTS})
    if not extras:
        return ""
    part = extras[0].split(".")[2]
    return f"its blocks hold modules torchvision's have not ({', '.join(extras[:3])}" \
           f"{' ...' if len(extras) > 3 else ''}: {_KNOWN_EXTRAS.get(part, 'not part of a torchvision block')})"


def _norm_without_statistics(state: Mapping) -> str:
    norms = [k[: -len(".weight")] for k in state if _NORM.match(k)]
    if norms and not any(f"{n}.running_mean" in state or f"{n}.running_var" in state for n in norms):
        return f"its {len(norms)} norm layers keep no running statistics ({norms[0]} has only " \
               f"{', '.join(sorted(k.rsplit('.', 1)[1] for k in state if k.rsplit('.', 1)[0] == norms[0]))}): " \
               f"GroupNorm or another norm that is not BatchNorm, as in timm's resnet50_gn"
    return ""


def check_declared(ckpt: Mapping, path: Path, fmt: str) -> str:
    """Refuse a file whose own record names a network that is not a torchvision ResNet; returns a note for the
    report on what that record said (empty when there is none)."""
    config = hub_config(path)
    if fmt == "hf-resnet":
        return _transformers_config(config, path)
    named = [(f"args.model {name!r}", name) for name in [_args_model(ckpt.get("args"))] if name is not None]
    if config and isinstance(config.get("architecture"), str):
        named.append((f"config.json's architecture {config['architecture']!r}", config["architecture"]))
    for where, name in named:
        if not _torchvision_name(name):
            raise CheckpointError(f"{path}: the file names its network ({where}), which is not one of the "
                                  f"torchvision ResNets moco-bench converts: its forward pass may differ where no "
                                  f"tensor shows it (refused whatever the flags)")
    return f"{named[0][0]}, a torchvision ResNet" if named else ""


def _torchvision_name(name: str) -> bool:
    """A torchvision ResNet's name, also as timm spells a pretrained tag (``resnet50.a1_in1k``)."""
    return name in ARCHS or name.removeprefix("hf-hub:timm/").split(".")[0] in ARCHS


def _args_model(args) -> str | None:
    """The ``model`` of an argparse namespace (timm's and torchvision's training scripts), read or inert."""
    if isinstance(args, Placeholder):
        args = args.state if isinstance(args.state, Mapping) else {}
    value = args.get("model") if isinstance(args, Mapping) else getattr(args, "model", None)
    return value if isinstance(value, str) else None


def hub_config(path: Path) -> dict | None:
    """The ``config.json`` beside a Hub-style weights file (``model.safetensors``, ``pytorch_model.bin``)."""
    config = path.parent / "config.json"
    if not _HUB_FILES.match(path.name) or not config.is_file() or config.stat().st_size > 2 ** 20:
        return None
    try:
        data = json.loads(config.read_text())
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{config}: the config.json beside {path.name} is not readable JSON ({e})") from None
    return data if isinstance(data, dict) else None


# transformers' ResNetConfig: anything but these values builds a network torchvision's ResNet is not.
_TORCHVISION_LIKE = {"downsample_in_bottleneck": False, "downsample_in_first_stage": False, "hidden_act": "relu"}


def _transformers_config(config: dict | None, path: Path) -> str:
    if config is None:
        return ("no config.json beside the file: transformers' defaults assumed (stride in the 3x3 convolution, "
                "none in the first stage, ReLU)")
    differ = {k: config[k] for k, v in _TORCHVISION_LIKE.items() if k in config and config[k] != v}
    if differ:
        what = ", ".join(f"{k}={v!r}" for k, v in differ.items())
        raise CheckpointError(f"{path}: its config.json says {what}: a transformers ResNet that strides or activates "
                              f"where torchvision's does not (refused whatever the flags)")
    return "config.json: a torchvision-style ResNet (stride in the 3x3 convolution, none in the first stage, ReLU)"
