"""What pretraining produced a checkpoint: method, epochs, architecture and data, as far as the file tells.

The tables pick the published row to hold a result against from this (results/published/numbers.csv:
method, pretrain_data, epochs, arch). The sources, most trusted first: a ``recipe`` block in the pretraining
config the checkpoint carries (moco-bench's own recipes declare one); the official MoCo layout, where the MLP
head tells v2 (``--mlp``) from v1; a random-initialization baseline; the raw-pixel reference. Anything else is
left unknown, and ``moco-bench tables --reference "MoCo v2 200"`` names the row by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# torchvision names -> the names of the published tables. Only exact matches: the MoCo paper's R50w2 widens
# every layer, torchvision's wide_resnet50_2 only the bottlenecks, so the latter keeps its own name.
SHORT_ARCH = {"resnet18": "R18", "resnet34": "R34", "resnet50": "R50", "resnet101": "R101", "resnet152": "R152"}


def short_arch(arch: str) -> str:
    return SHORT_ARCH.get(arch, arch)


def _state_keys(ckpt: Mapping) -> list:
    state = ckpt.get("state_dict", ckpt)
    return [str(k) for k in state] if isinstance(state, Mapping) else []


def recipe_of(ckpt: Mapping[str, Any] | None, fmt: str, arch: str, epochs: int | None) -> dict:
    """``{method, epochs, arch, pretrain_data, source, deviations}``; unknown fields are None. ``deviations``:
    ``{key: {protocol, run}}`` where moco-bench's pretraining recorded that the run left its shipped recipe."""
    out = {"method": None, "epochs": epochs, "arch": short_arch(arch), "pretrain_data": None, "source": "unknown",
           "deviations": {}}
    config = ckpt.get("config") if isinstance(ckpt, Mapping) else None
    declared = config.get("recipe") if isinstance(config, Mapping) else None
    if isinstance(declared, Mapping):
        deviations = declared.get("deviations")
        out.update(method=declared.get("method"), pretrain_data=declared.get("pretrain_data"),
                   source="the recipe block of the checkpoint's pretraining config",
                   deviations=dict(deviations) if isinstance(deviations, Mapping) else {})
    elif fmt == "random":
        out.update(method="random", pretrain_data="-", epochs=0, source="random initialization")
    elif fmt == "pixels":
        out.update(method="raw pixels", pretrain_data="-", epochs=0, arch="-", source="raw pixels: no network")
    elif fmt == "moco" and ckpt is not None:
        mlp = any(k.endswith("encoder_q.fc.0.weight") for k in _state_keys(ckpt))
        out.update(method="MoCo v2" if mlp else "MoCo v1",
                   source="official MoCo layout: an MLP head (--mlp) means v2, a linear fc v1")
    return out
