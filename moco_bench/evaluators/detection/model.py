"""detectron2 model pieces of the detection transfer: MoCo's C4 ROI head, the backbone shape read from the
checkpoint, the norm a run can actually use, and the check that every pretrained weight reached the model.

Importing this module imports detectron2; :mod:`moco_bench.evaluators.detection.detection` imports it only after
checking that detectron2 is installed.
"""

from __future__ import annotations

import re
from typing import Dict, List

import numpy as np
import torch
from detectron2.layers import get_norm
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads

from moco_bench.convert.arch import build_resnet
from moco_bench.core.errors import CheckpointError

EXTRA_NORM_HEAD = "Res5ROIHeadsExtraNorm"


class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """``Res5ROIHeads`` with a norm layer (``MODEL.RESNETS.NORM``) after the last res5 block.

    The MoCo paper's C4 detector has this extra normalization (moco ``detection/train_net.py`` registers the head
    under this name and ``Base-RCNN-C4-BN.yaml`` selects it); detectron2's own Res5ROIHeads has none.
    """

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        res5 = ret["res5"]
        res5.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, res5[-1].out_channels))
        return ret


if EXTRA_NORM_HEAD not in ROI_HEADS_REGISTRY:  # another copy (e.g. moco's train_net.py) may have registered one
    ROI_HEADS_REGISTRY.register(Res5ROIHeadsExtraNorm)


def resnet_options(arch: str) -> List:
    """detectron2 ``MODEL.RESNETS`` options that build the same ResNet as the suite's ``arch``.

    Depth comes from the name; groups, widths and stem from the suite's own model (``resnext50_32x4d``: 32 x 4,
    ``wide_resnet50_2``: 1 x 128; BasicBlock nets: 64 res2 channels, 32 in ``resnet18_small_w0.5``). torchvision
    puts the stride in the 3x3 conv, so ``STRIDE_IN_1X1`` is False (as MoCo's configs say). A small-image variant's
    3x3 stride-1 stem is a backbone builder of its own (:func:`.backbones.backbone_name`).
    """
    depth = int(re.search(r"resne\w*?(\d+)", arch).group(1))
    tv = build_resnet(arch, device="meta")
    last = [m for m in tv.layer1[-1].modules() if isinstance(m, torch.nn.Conv2d)][-1]
    width = tv.layer1[0].conv2.out_channels // tv.groups if depth >= 50 else tv.base_width
    return ["MODEL.RESNETS.DEPTH", depth, "MODEL.RESNETS.NUM_GROUPS", tv.groups, "MODEL.RESNETS.WIDTH_PER_GROUP",
            width, "MODEL.RESNETS.STEM_OUT_CHANNELS", tv.conv1.out_channels, "MODEL.RESNETS.RES2_OUT_CHANNELS",
            last.out_channels, "MODEL.RESNETS.STRIDE_IN_1X1", False]


# The config nodes whose NORM a model uses (a GeneralizedRCNN's, unless its meta-architecture is listed).
NORMED = {"SemanticSegmentor": ("MODEL.RESNETS.", "MODEL.FPN.", "MODEL.SEM_SEG_HEAD.")}
RCNN_NORMED = ("MODEL.RESNETS.", "MODEL.FPN.", "MODEL.ROI_")


def norm_keys(cfg) -> Dict[str, str]:
    """The norm options a model uses (ResNet, FPN, ROI heads, semantic segmentation head) that are set:
    ``{key: value}``."""
    out = {}
    normed = NORMED.get(cfg.MODEL.META_ARCHITECTURE, RCNN_NORMED)

    def walk(node, prefix):
        for k, v in node.items():
            if hasattr(v, "items"):
                walk(v, f"{prefix}{k}.")
            elif k == "NORM" and v and prefix.startswith(normed):
                out[f"{prefix}{k}"] = v
    walk(cfg, "")
    return out


def usable_norms(cfg, world_size: int, device: str) -> Dict[str, Dict[str, str]]:
    """Swap ``SyncBN`` where it cannot run as the protocol means it; returns ``{key: {config, used}}``.

    One process: SyncBN synchronizes nothing, so plain BN is the same computation over the same batch (and
    avoids SyncBatchNorm's device checks). Several CPU processes: torch's SyncBatchNorm refuses CPU tensors,
    detectron2's naiveSyncBN (all-reduce of the batch statistics) computes the same statistics with gloo.
    """
    norms = {}
    for key, value in norm_keys(cfg).items():
        used = value
        if value == "SyncBN" and world_size <= 1:
            used = "BN"
        elif value == "SyncBN" and device == "cpu":
            used = "naiveSyncBN"
        norms[key] = {"config": value, "used": used}
        if used != value:
            cfg.merge_from_list([key, used])
    return norms


def check_backbone_loaded(model: torch.nn.Module, weights: Dict[str, np.ndarray], source: str) -> Dict[str, object]:
    """Post-condition of loading: every tensor of the converted backbone sits, unchanged, in the model.

    detectron2 places weights by suffix matching (``res5.0.conv1.weight`` lands in ``roi_heads.res5`` for C4
    and in ``backbone.bottom_up.res5`` for FPN), and silently skips a weight it cannot place; a skipped
    pretrained weight would make the result a partly random-init number, so it is an error here.

    Returns:
        ``loaded`` (count), ``placed_under`` (model prefixes that received weights) and ``not_from_checkpoint``
        (count of model tensors left at their initialization: heads, FPN, RPN, the extra norm).
    """
    state = model.state_dict()
    placed, problems = {}, []
    for key, value in weights.items():
        targets = [k for k in state if k == key or k.endswith("." + key)]
        if not targets:
            problems.append(f"{key}: no model tensor of that name")
            continue
        expected = torch.as_tensor(value)
        same = [k for k in targets if state[k].shape == expected.shape
                and torch.equal(state[k].detach().cpu().to(expected.dtype), expected)]
        if not same:
            problems.append(f"{key}: {targets[0]} differs from the checkpoint (shape {tuple(state[targets[0]].shape)} "
                            f"vs {tuple(expected.shape)})")
            continue
        placed[key] = same[0]
    if problems:
        raise CheckpointError(f"{source}: {len(problems)} of {len(weights)} backbone weights did not load into the "
                              f"detectron2 model: " + "; ".join(problems[:5]))
    prefixes = sorted({k[: -len(key)].rstrip(".") for key, k in placed.items()})
    return {"loaded": len(placed), "placed_under": prefixes, "not_from_checkpoint": len(state) - len(placed)}
