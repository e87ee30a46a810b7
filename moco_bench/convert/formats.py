"""Checkpoint layouts, recognized from their keys (the way timm's checkpoint filters do).

A layout is a :class:`Format` registered in :data:`FORMATS`. Calling it on a loaded checkpoint returns a
:class:`Split`: every tensor of the model, sorted into backbone tensors (renamed to torchvision keys),
tensors dropped on purpose (heads, momentum encoder, queue, each with its reason) and tensors no rule
explains. Layouts are tried in registration order, most specific first; the first whose signal keys are
present wins.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from moco_bench.core.errors import CheckpointError
from moco_bench.core.registry import Registry

FORMATS = Registry("checkpoint format")
_ORDER: list[str] = []

MOMENTUM = "momentum (key/teacher) encoder"
QUEUE = "queue of negative keys"
PROJECTION = "projection head"


class Entry(NamedTuple):
    key: str  # as written in the file, relative to the location
    name: str  # the key with wrapper prefixes (DistributedDataParallel's ``module.``) removed
    tensor: torch.Tensor


@dataclass
class Split:
    """A checkpoint's tensors sorted by what the converter does with them."""

    location: str
    backbone: dict[str, tuple[str, torch.Tensor]]  # torchvision key -> (file key, tensor)
    dropped: dict[str, str]  # file key -> reason
    unexpected: list[str]  # file keys no rule of the layout explains
    epoch: int | None


def _matches(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _strip(key: str, wrappers: tuple[str, ...]) -> str:
    parts = key.split(".")
    while len(parts) > 1 and parts[0] in wrappers:
        parts = parts[1:]
    return ".".join(parts)


def flatten(tree: Mapping, wrappers: tuple[str, ...] = ("module",), key: str = "", name: str = "") -> list[Entry]:
    """Tensors of a (possibly nested) mapping, keyed by dotted paths; other values are not model weights."""
    out = []
    for k, value in tree.items():
        sub_key, sub_name = f"{key}{k}", f"{name}{_strip(str(k), wrappers)}"
        if isinstance(value, Mapping):
            out += flatten(value, wrappers, sub_key + ".", sub_name + ".")
        elif isinstance(value, torch.Tensor):
            out.append(Entry(sub_key, sub_name, value))
    return out


def _state_dict(ckpt: Mapping) -> tuple[str, Mapping] | None:
    """The usual home of a model's weights: ``state_dict``, ``model``, or the checkpoint itself."""
    for key in ("state_dict", "model"):
        if isinstance(ckpt.get(key), Mapping):
            return key, ckpt[key]
    if any(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return "the top level", ckpt
    return None


def _epoch(ckpt: Mapping) -> int | None:
    """Pretraining epochs as the checkpoint states them (MoCo, DINO: epochs done; mmengine keeps it in meta)."""
    meta = ckpt.get("meta")
    for value in (ckpt.get("epoch"), meta.get("epoch") if isinstance(meta, Mapping) else None):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


@dataclass(frozen=True)
class Format:
    """One checkpoint layout.

    Attributes:
        name: the ``--format`` name.
        description: what wrote it.
        locate: checkpoint -> (location for messages, the mapping holding the weights), or None if absent.
        backbone: name prefixes whose remainder is a torchvision ResNet key (after ``rename``).
        drop: name prefix -> reason, for tensors left out on purpose; checked before ``backbone``.
        signals: name prefixes that identify the layout; ``top_signals``: top-level keys that do.
        excludes: name prefixes whose presence rules the layout out.
        wrappers: leading key components to remove (``module.`` of DistributedDataParallel).
        rename: maps a backbone remainder to its torchvision key.
        epoch: checkpoint -> pretraining epochs, if recorded.
    """

    name: str
    description: str
    locate: Callable[[Mapping], tuple[str, Mapping] | None]
    backbone: tuple[str, ...]
    drop: Mapping[str, str]
    signals: tuple[str, ...]
    top_signals: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    wrappers: tuple[str, ...] = ("module",)
    rename: Callable[[str], str] = str  # identity
    epoch: Callable[[Mapping], int | None] = _epoch

    def entries(self, ckpt: Mapping) -> tuple[str, list[Entry]] | None:
        found = self.locate(ckpt)
        if found is None:
            return None
        location, tree = found
        return location, flatten(tree, self.wrappers)

    def detect(self, ckpt: Mapping) -> bool:
        found = self.entries(ckpt)
        if found is None:
            return False
        names = [e.name for e in found[1]]
        if any(_matches(n, p) for n in names for p in self.excludes):
            return False
        return (any(_matches(n, p) for n in names for p in self.signals)
                or any(k in ckpt for k in self.top_signals))

    def __call__(self, ckpt: Mapping, source: str) -> Split:
        found = self.entries(ckpt)
        if found is None:
            raise CheckpointError(f"{source}: not in the {self.name} layout ({self.description}): its weights "
                                  f"container is missing; top-level keys: {_top_keys(ckpt)}")
        location, entries = found
        backbone: dict[str, tuple[str, torch.Tensor]] = {}
        dropped, unexpected = {}, []
        for entry in entries:
            reason = next((r for p, r in self.drop.items() if _matches(entry.name, p)), None)
            prefix = next((p for p in self.backbone if _matches(entry.name, p)), None)
            if reason is not None:
                dropped[entry.key] = reason
            elif prefix is not None:
                target = self.rename(entry.name[len(prefix) + 1:] if prefix else entry.name)
                if target in backbone:
                    raise CheckpointError(f"{source}: {backbone[target][0]!r} and {entry.key!r} both give the "
                                          f"backbone tensor {target!r}")
                backbone[target] = (entry.key, entry.tensor)
            else:
                unexpected.append(entry.key)
        if not backbone:
            raise CheckpointError(f"{source}: no backbone tensors under {', '.join(map(repr, self.backbone))} in "
                                  f"{location} ({self.name} layout); key prefixes seen: {_prefixes(entries)}")
        return Split(location, backbone, dropped, unexpected, self.epoch(ckpt))


def register_format(fmt: Format) -> Format:
    FORMATS.register(fmt.name)(fmt)
    _ORDER.append(fmt.name)
    return fmt


def detect_format(ckpt: Any, source: str) -> Format:
    """The first registered layout whose signals the checkpoint carries."""
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{source}: not a checkpoint: expected a dict of weights, got {type(ckpt).__name__}")
    for name in _ORDER:
        if FORMATS.get(name).detect(ckpt):
            return FORMATS.get(name)
    found = _state_dict(ckpt)
    seen = _prefixes(flatten(found[1] if found else ckpt, wrappers=()))
    raise CheckpointError(f"{source}: unknown checkpoint layout; top-level keys: {_top_keys(ckpt)}; key prefixes "
                          f"seen: {seen}; known formats: {', '.join(_ORDER)} (force one with --format)")


def format_names() -> list[str]:
    return list(_ORDER)


def _top_keys(ckpt: Mapping, limit: int = 20) -> str:
    keys = [str(k) for k in ckpt]
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _prefixes(entries: list[Entry], limit: int = 20) -> str:
    counts = Counter(".".join(e.key.split(".")[:2]) for e in entries)
    items = [f"{p} ({n})" for p, n in sorted(counts.items())]
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "") or "none"


def _teacher_student(ckpt: Mapping) -> tuple[str, Mapping] | None:
    if not all(isinstance(ckpt.get(k), Mapping) for k in ("teacher", "student")):
        return None
    return "teacher, student", {net: ckpt[net] for net in ("teacher", "student")}


def _classy(ckpt: Mapping) -> tuple[str, Mapping] | None:
    classy = ckpt.get("classy_state_dict")
    if not isinstance(classy, Mapping):
        return None
    return "classy_state_dict", {k: classy[k] for k in ("base_model", "loss") if isinstance(classy.get(k), Mapping)}


def _vissl_epoch(ckpt: Mapping) -> int | None:
    phase = ckpt.get("train_phase_idx")  # 0-based index of the training phase (epoch) just completed
    return phase + 1 if isinstance(phase, int) else None


# torchvision ResNet children in order; lightly's examples keep them as nn.Sequential(*children[:-1]).
_SEQUENTIAL = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def _from_sequential(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{_SEQUENTIAL.get(head, head)}.{tail}"


register_format(Format(
    name="dino", description="DINO-style teacher/student checkpoint (facebookresearch/dino)",
    locate=_teacher_student, backbone=("teacher.backbone",),
    drop={"teacher.head": PROJECTION, "student": "student network (the teacher is the one evaluated, as in DINO)"},
    signals=("teacher.backbone",)))

register_format(Format(
    name="vissl", description="VISSL checkpoint (classy_state_dict, trunk._feature_blocks)",
    locate=_classy, backbone=("base_model.model.trunk._feature_blocks",),
    drop={"base_model.model.heads": "heads", "loss": f"loss state ({QUEUE}, {MOMENTUM})"},
    signals=("base_model.model.trunk",), epoch=_vissl_epoch))

register_format(Format(
    name="mocov3", description="MoCo v3 (facebookresearch/moco-v3 main_moco.py)",
    locate=_state_dict, backbone=("base_encoder",),
    drop={"base_encoder.fc": PROJECTION, "momentum_encoder": MOMENTUM, "predictor": "prediction head"},
    signals=("base_encoder",)))

register_format(Format(
    name="moco", description="MoCo v1/v2 (facebookresearch/moco main_moco.py)",
    locate=_state_dict, backbone=("encoder_q",),
    drop={"encoder_q.fc": PROJECTION, "encoder_k": MOMENTUM, "queue": QUEUE, "queue_ptr": QUEUE},
    signals=("encoder_q",), excludes=("backbone",)))

register_format(Format(
    name="solo-learn", description="solo-learn (PyTorch Lightning checkpoint)",
    locate=_state_dict, backbone=("backbone",),
    drop={"projector": PROJECTION, "predictor": "prediction head", "momentum_backbone": MOMENTUM,
          "momentum_projector": MOMENTUM, "classifier": "online linear classifier",
          "momentum_classifier": "online linear classifier", "queue": QUEUE, "queue_ptr": QUEUE},
    signals=("projector", "momentum_backbone", "momentum_projector", "classifier")))

register_format(Format(
    name="lightly", description="lightly (PyTorch Lightning module; backbone as named or Sequential children)",
    locate=_state_dict, backbone=("backbone",),
    drop={"projection_head": PROJECTION, "prediction_head": "prediction head", "backbone_momentum": MOMENTUM,
          "projection_head_momentum": MOMENTUM, "criterion": "loss state (memory bank of negatives)"},
    signals=("projection_head", "prediction_head", "backbone_momentum", "backbone.0"),
    top_signals=("pytorch-lightning_version",), wrappers=("module", "model"), rename=_from_sequential))

register_format(Format(
    name="mmselfsup", description="mmselfsup / mmpretrain (state_dict with backbone.*)",
    locate=_state_dict, backbone=("backbone",),
    drop={"neck": PROJECTION, "head": "head", "encoder_q": "query encoder (backbone and neck, stored twice)",
          "encoder_k": MOMENTUM, "momentum_encoder": MOMENTUM, "target_net": MOMENTUM, "queue": QUEUE,
          "queue_ptr": QUEUE, "data_preprocessor": "data preprocessor buffers"},
    signals=("backbone",)))

register_format(Format(
    name="torchvision", description="torchvision ResNet state dict",
    locate=_state_dict, backbone=("",), drop={"fc": "classifier"},
    signals=("conv1", "bn1", "layer1")))
