"""Any supported checkpoint -> a torchvision ResNet backbone, checked key by key.

Everything downstream (evaluators, detection transfer) starts from a :class:`ConvertedBackbone`, so the
format a checkpoint came in never matters past this module.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from moco_bench.convert.arch import CLASSIFIER_KEYS, build_resnet, detect_arch, expected_shapes
from moco_bench.convert.formats import FORMATS, detect_format
from moco_bench.convert.recipe import recipe_of
from moco_bench.convert.report import KeyReport
from moco_bench.convert.safe_pickle import torch_load
from moco_bench.core.atomic import atomic_write_bytes
from moco_bench.core.env import sha256_file
from moco_bench.core.errors import CheckpointError

RANDOM_PREFIX = "random:"


@dataclass
class ConvertedBackbone:
    """A ResNet backbone in torchvision key names (no classifier), with where it came from.

    Attributes:
        arch: torchvision architecture name (``resnet50``, ``wide_resnet50_2`` ...).
        state_dict: torchvision keys -> tensors, without ``fc.*``.
        format: the detected (or forced) checkpoint layout, ``random`` for a random-init baseline.
        path: the checkpoint file, or ``random:<arch>@<seed>``.
        sha256: of the checkpoint file; for a random baseline, of its tensors' bytes in key order (so feature
            caches and result folders tell seeds and torch versions' initializations apart).
        epoch: pretraining epochs as the checkpoint states them (0 for a random baseline), None if unknown.
        report: the key report of the conversion.
        recipe: what pretraining produced it, as far as the file tells (``moco_bench.convert.recipe``).
    """

    arch: str
    state_dict: dict[str, torch.Tensor]
    format: str
    path: str
    sha256: str
    epoch: int | None
    report: KeyReport
    recipe: dict | None = None

    def build_model(self) -> nn.Module:
        """``torchvision.models.<arch>`` holding these weights, with ``fc = Identity`` (pooled features out)."""
        model = build_resnet(self.arch)
        model.fc = nn.Identity()
        # Strict unless keys were allowed to be missing; those keep torchvision's initialization.
        model.load_state_dict(self.state_dict, strict=not self.report.missing)
        return model

    def record(self) -> dict:
        """The ``checkpoint`` block of a result record."""
        return {"path": self.path, "sha256": self.sha256, "format": self.format, "arch": self.arch,
                "epochs": self.epoch, "recipe": self.recipe or recipe_of(None, self.format, self.arch, self.epoch)}


def load_backbone(path: str | Path, fmt: str | None = None, allow_missing: bool = False) -> ConvertedBackbone:
    """Read a checkpoint of any supported layout and convert its backbone.

    Args:
        path: checkpoint file, or ``random:<arch>[@seed]`` for a seeded random-init baseline.
        fmt: a registered format name to force; None detects it from the keys.
        allow_missing: accept missing backbone keys (left at their initialization) and unexpected keys.

    Raises:
        CheckpointError: unreadable file, unknown layout, non-ResNet backbone, or keys that do not fit.
    """
    if str(path).startswith(RANDOM_PREFIX):
        return random_backbone(str(path))
    path = Path(path)
    source = str(path)
    ckpt = torch_load(path)
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{source}: not a checkpoint: expected a dict of weights, got {type(ckpt).__name__}")
    layout = FORMATS.get(fmt) if fmt else detect_format(ckpt, source)
    split = layout(ckpt, source)
    arch = detect_arch({k: t for k, (_, t) in split.backbone.items()}, source)
    report = KeyReport(source=source, format=layout.name, location=split.location, arch=arch, epoch=split.epoch,
                       dropped=dict(split.dropped), unexpected=list(split.unexpected))
    state = {}
    for key, shape in expected_shapes(arch).items():
        if key not in split.backbone:
            report.missing.append(key)
            continue
        file_key, tensor = split.backbone[key]
        if tuple(tensor.shape) != shape:
            report.shape_mismatches[key] = {"file_key": file_key, "checkpoint": list(tensor.shape),
                                            "expected": list(shape)}
            continue
        state[key] = tensor
        report.used[file_key] = key
    for key, (file_key, _) in split.backbone.items():
        if key in CLASSIFIER_KEYS:
            report.dropped[file_key] = "classifier"
        elif key not in expected_shapes(arch):
            report.unexpected.append(file_key)
    problems = report.problems(allow_missing)
    if problems:
        hint = "" if allow_missing or not (report.missing or report.unexpected) else \
            " (--allow-missing accepts missing and unexpected keys)"
        raise CheckpointError(f"{source}: cannot convert this {layout.name} checkpoint into {arch}: "
                              + "; ".join(problems) + hint)
    return ConvertedBackbone(arch=arch, state_dict=state, format=layout.name, path=source,
                             sha256=sha256_file(path), epoch=split.epoch, report=report,
                             recipe=recipe_of(ckpt, layout.name, arch, split.epoch))


def random_backbone(spec: str) -> ConvertedBackbone:
    """``random:<arch>[@seed]``: torchvision's initialization under a fixed seed (default 0)."""
    arch, _, seed_text = spec[len(RANDOM_PREFIX):].partition("@")
    try:
        seed = int(seed_text) if seed_text else 0
    except ValueError:
        raise CheckpointError(f"{spec}: the seed after '@' must be an integer") from None
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(seed)
        model = build_resnet(arch)
    state = {k: v for k, v in model.state_dict().items() if k not in CLASSIFIER_KEYS}
    path = f"{RANDOM_PREFIX}{arch}@{seed}"
    report = KeyReport(source=path, format="random", location=f"torchvision initialization, seed {seed}",
                       arch=arch, epoch=0, used={k: k for k in state})
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].contiguous().numpy().tobytes())
    return ConvertedBackbone(arch=arch, state_dict=state, format="random", path=path, sha256=digest.hexdigest(),
                             epoch=0, report=report)


def write_torchvision(backbone: ConvertedBackbone, path: str | Path) -> Path:
    """Write the backbone as a plain torchvision state dict (loads with only ``fc.*`` missing)."""
    buffer = io.BytesIO()
    torch.save(backbone.state_dict, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)
