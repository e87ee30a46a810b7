"""Any supported checkpoint -> a torchvision ResNet backbone, checked key by key.

Everything downstream (evaluators, detection transfer) starts from a :class:`ConvertedBackbone`, so the
format a checkpoint came in never matters past this module.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from moco_bench.convert import (
    layouts,  # noqa: F401  (registers the formats)
    variants,
)
from moco_bench.convert.arch import CLASSIFIER_KEYS, build_resnet, declared_arch, expected_shapes, recognize_arch
from moco_bench.convert.formats import FORMATS, Copy, Format, SharedTooOften, detect_format, flatten, leaves_of_type
from moco_bench.convert.loading import LoadedFile, read_checkpoint
from moco_bench.convert.recipe import recipe_of
from moco_bench.convert.report import KeyReport
from moco_bench.core.atomic import atomic_torch_save
from moco_bench.core.env import sha256_file
from moco_bench.core.errors import CheckpointError
from moco_bench.core.inert_pickle import Placeholder
from moco_bench.models import resnets
from moco_bench.models.taps import Pixels

RANDOM_PREFIX = "random:"
PIXELS = "pixels:"  # the raw-pixel reference line: no network, the flattened image is the feature


@dataclass
class ConvertedBackbone:
    """A ResNet backbone in torchvision key names (no classifier), with where it came from.

    Attributes:
        arch: architecture name (``resnet50``, ``wide_resnet50_2``, ``resnet18_small_w0.5`` ...): a name of
            :data:`moco_bench.models.resnets.ARCHS`, built by :func:`moco_bench.models.resnets.build`.
        state_dict: torchvision keys -> tensors, without ``fc.*``.
        format: the detected (or forced) checkpoint layout, ``random`` for a random-init baseline.
        path: the checkpoint file, or ``random:<arch>@<seed>``.
        sha256: of the checkpoint file; when a copy other than the format's default was converted, of the file's
            hash and the copy's prefix; for a random baseline, of its tensors' bytes in key order (so feature
            caches and result folders tell copies, seeds and torch versions' initializations apart).
        epoch: pretraining epochs completed, read the way the format counts them (0 for a random baseline),
            None if unknown.
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
        """The suite's ``arch`` network holding these weights, with ``fc = Identity`` (pooled features out); for
        ``pixels:``, :class:`~moco_bench.models.taps.Pixels` (the flattened image)."""
        if self.format == "pixels":
            return Pixels()
        model = build_resnet(self.arch)
        model.fc = nn.Identity()
        # Strict unless keys were allowed to be missing; those keep torchvision's initialization.
        model.load_state_dict(self.state_dict, strict=not self.report.missing)
        return model

    def record(self) -> dict:
        """The ``checkpoint`` block of a result record."""
        return {"path": self.path, "sha256": self.sha256, "format": self.format, "arch": self.arch,
                "epochs": self.epoch, "weights": self.report.weights.get("prefix", ""),
                "recipe": self.recipe or recipe_of(None, self.format, self.arch, self.epoch)}


def load_backbone(path: str | Path, fmt: str | None = None, allow_missing: bool = False,
                  weights: str | None = None) -> ConvertedBackbone:
    """Read a checkpoint of any supported layout and convert its backbone.

    Args:
        path: checkpoint file, ``random:<arch>[@seed]`` for a seeded random-init baseline, or ``pixels:`` for the
            raw-pixel reference (no network: the evaluators read the flattened, normalized image as ``gap``).
        fmt: a registered format name to force; None detects it from the keys.
        allow_missing: accept missing backbone keys (left at their initialization) and unexpected keys.
        weights: which copy of the network to convert where the file holds several: a role (``model``,
            ``ema``, ``teacher``, ``student``, ``momentum``) or a copy's key prefix; None takes the copy the
            format's reference evaluation uses.

    Raises:
        CheckpointError: unreadable or hostile file, unknown layout, non-ResNet backbone, ambiguous copies,
            weights that are not plain tensors, or keys that do not fit.
    """
    if str(path).startswith((RANDOM_PREFIX, PIXELS)):
        if weights is not None:
            what = "the raw-pixel reference has no network" if str(path).startswith(PIXELS) else \
                "a random baseline has one copy of the network"
            raise CheckpointError(f"{path}: {what}; drop --weights")
        return pixels_backbone(str(path)) if str(path).startswith(PIXELS) else random_backbone(str(path))
    try:
        return _convert(Path(path), fmt, allow_missing, weights)
    except RecursionError:
        raise CheckpointError(f"{path}: nested too deeply to be a checkpoint") from None
    except SharedTooOften as e:
        raise CheckpointError(f"{path}: refused: {e}") from None


def _convert(path: Path, fmt: str | None, allow_missing: bool, weights: str | None) -> ConvertedBackbone:
    source = str(path)
    loaded = read_checkpoint(path)
    ckpt = loaded.obj
    if not isinstance(ckpt, Mapping):
        what = (f"a pickled {ckpt.name} object (not rebuilt; save its state_dict() instead)"
                if isinstance(ckpt, Placeholder) else type(ckpt).__name__)
        raise CheckpointError(f"{source}: not a checkpoint: expected a dict of weights, got {what}")
    _require_plain_containers(loaded, source)
    _require_resnet(ckpt, source)
    layout = FORMATS.get(fmt) if fmt else detect_format(ckpt, source)
    _require_plain_weights(layout, loaded, source)
    split = layout(ckpt, source, weights)
    tensors = {k: t for k, (_, t) in split.backbone.items()}
    variants.check_tensors(tensors, source)
    declared = variants.check_declared(ckpt, path, layout.name)
    arch, arch_note = recognize_arch(tensors, source, declared_arch(ckpt))
    report = KeyReport(source=source, format=layout.name, location=split.location, arch=arch,
                       arch_note="; ".join(filter(None, (arch_note, declared))),
                       epoch=split.epochs.completed, epoch_note=split.epochs.how, weights=split.weights,
                       copies=split.copies, reader=loaded.reader, placeholders=loaded.placeholders,
                       dropped=dict(split.dropped), unexpected=list(split.unexpected))
    state = _fit(split.backbone, arch, report)
    problems = report.problems(allow_missing)
    if problems:
        hint = "" if allow_missing or not (report.missing or report.unexpected) else \
            " (--allow-missing accepts missing and unexpected keys)"
        raise CheckpointError(f"{source}: cannot convert this {layout.name} checkpoint into {arch}: "
                              + "; ".join(problems) + hint)
    sha256 = sha256_file(path)
    if split.weights["prefix"] != layout.copies[0].prefix:  # another copy: its own feature caches and results
        sha256 = hashlib.sha256(f"{sha256}:{split.weights['prefix']}".encode()).hexdigest()
    return ConvertedBackbone(arch=arch, state_dict=state, format=layout.name, path=source, sha256=sha256,
                             epoch=split.epochs.completed, report=report,
                             recipe=recipe_of(ckpt, layout.name, arch, split.epochs.completed))


def _fit(backbone: dict[str, tuple[str, torch.Tensor]], arch: str, report: KeyReport) -> dict[str, torch.Tensor]:
    """The torchvision state dict, key by key; what does not fit goes into the report."""
    state = {}
    for key, shape in expected_shapes(arch).items():
        if key not in backbone:
            report.missing.append(key)
            continue
        file_key, tensor = backbone[key]
        if tuple(tensor.shape) != shape:
            report.shape_mismatches[key] = {"file_key": file_key, "checkpoint": list(tensor.shape),
                                            "expected": list(shape)}
            continue
        report.used[file_key] = key
        if tensor.is_floating_point():  # the evaluators' networks are float32; the report keeps what the file held
            dtype = str(tensor.dtype).removeprefix("torch.")
            report.source_dtypes[dtype] = report.source_dtypes.get(dtype, 0) + 1
            tensor = tensor.float()
        state[key] = tensor
    for key, (file_key, _) in backbone.items():
        if key in CLASSIFIER_KEYS:
            report.dropped[file_key] = "classifier"
        elif key not in expected_shapes(arch):
            report.unexpected.append(file_key)
    return state


# A ResNet's first residual block, under any prefix: torchvision/timm/mmcv, Sequential children, detectron2,
# transformers.
_RESNET_BLOCK = re.compile(r"(^|\.)((layer1|4|res2)\.0\.conv1|encoder\.stages\.0\.layers\.0\.layer\.0\."
                           r"convolution)\.weight$")


def _require_resnet(ckpt: Mapping, source: str) -> None:
    """Say "not a ResNet" before anything about layouts when no tensor of the file belongs to one."""
    keys = [e.name.split(".") for e in flatten(ckpt, wrappers=())]
    if any(_RESNET_BLOCK.search(".".join(k)) for k in keys):
        return
    if not keys:
        raise CheckpointError(f"{source}: holds no tensors; top-level keys: {', '.join(map(str, list(ckpt)[:10]))}")
    shortest = min(map(len, keys))
    common = next((i for i in range(shortest) if len({k[i] for k in keys}) > 1), shortest - 1)
    examples = ", ".join(".".join(k[common:]) for k in keys[:4]) + (" ..." if len(keys) > 4 else "")
    under = f" under {'.'.join(keys[0][:common])}" if common else ""
    raise CheckpointError(f"{source}: not a ResNet: none of its {len(keys)} tensors is a ResNet block "
                          f"(layer1.0.conv1.weight under any prefix); keys like {examples}{under}")


# Top-level keys that hold weights in some layout.
_CONTAINERS = ("state_dict", "model", "state_dict_ema", "model_ema", "teacher", "student", "classy_state_dict")


def _require_plain_containers(loaded: LoadedFile, source: str) -> None:
    """A weights container that is itself a placeholder (a class the file names) hides its tensors."""
    hits = [(k, v) for k, v in loaded.obj.items() if k in _CONTAINERS and isinstance(v, Placeholder)]
    if hits:
        _refuse_placeholders(hits, loaded, source)


def _require_plain_weights(layout: Format, loaded: LoadedFile, source: str) -> None:
    """The tensors a copy would use must be tensors: placeholders where weights belong are refused."""
    found = layout.locate(loaded.obj)
    if found is not None:
        hits = [(key, value) for key, name, value in leaves_of_type(found[1], Placeholder, layout.wrappers)
                if isinstance(layout.owner(name), Copy)]
        if hits:
            _refuse_placeholders(hits, loaded, source)


def _refuse_placeholders(hits: list[tuple[str, Placeholder]], loaded: LoadedFile, source: str) -> None:
    names = sorted({p.name for _, p in hits})
    reasons = sorted({p.reason for _, p in hits if p.reason})
    keys = ", ".join(k for k, _ in hits[:3]) + (" ..." if len(hits) > 3 else "")
    raise CheckpointError(
        f"{source}: the weights are not plain tensors: {keys} ({len(hits)} entries) are {', '.join(names)} "
        f"objects{' (' + '; '.join(reasons) + ')' if reasons else ''}, which moco-bench does not rebuild (read "
        f"with the {loaded.reader}; nothing from the file was run). Save the state dict with plain tensors.")


def random_backbone(spec: str) -> ConvertedBackbone:
    """``random:<arch>[@seed]``: the initialization of the suite's ``arch`` network (torchvision's, for its own
    ResNets) under a fixed seed (default 0)."""
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
    report = KeyReport(source=path, format="random", location=f"initialization of the suite's {arch}, seed {seed}",
                       arch=arch, arch_note=f"named in the spec ({resnets.describe(arch)})", epoch=0,
                       epoch_note="a random initialization: no pretraining", used={k: k for k in state})
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].contiguous().numpy().tobytes())
    return ConvertedBackbone(arch=arch, state_dict=state, format="random", path=path, sha256=digest.hexdigest(),
                             epoch=0, report=report)


def pixels_backbone(spec: str = PIXELS) -> ConvertedBackbone:
    """``pixels:``: the raw-pixel reference. No tensors; :meth:`ConvertedBackbone.build_model` gives the identity
    "backbone" whose only feature, ``gap``, is the normalized input image flattened (the kNN and linear protocols
    then run on pixels exactly as on features: same split, transform, search and classifier)."""
    if spec != PIXELS:
        raise CheckpointError(f"{spec}: the raw-pixel reference takes no options; write {PIXELS}")
    report = KeyReport(source=spec, format="pixels", location="no network: the flattened input image", arch="pixels",
                       arch_note="raw pixels (no network)", epoch=0, epoch_note="no network, no pretraining")
    return ConvertedBackbone(arch="pixels", state_dict={}, format="pixels", path=spec,
                             sha256=hashlib.sha256(b"moco-bench raw pixels").hexdigest(), epoch=0, report=report)


def write_torchvision(backbone: ConvertedBackbone, path: str | Path) -> Path:
    """Write the backbone as a plain torchvision state dict (loads with only ``fc.*`` missing)."""
    atomic_torch_save(Path(path), backbone.state_dict)
    return Path(path)
