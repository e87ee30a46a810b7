"""Checkpoint layouts, recognized from their keys (the way timm's checkpoint filters do).

A layout is a :class:`Format` registered in :data:`FORMATS` (the layouts themselves are in
:mod:`moco_bench.convert.layouts`). Calling it on a loaded checkpoint returns a :class:`Split`: every tensor
of the file, sorted into backbone tensors (renamed to torchvision keys), tensors dropped on purpose (heads,
queues, the copies of the network that were not chosen, each with its reason) and tensors no rule explains.

Many files hold several copies of the backbone (a momentum or EMA encoder, DINO's teacher and student).
Each copy has a role (``model``, ``ema``, ``teacher``, ``student``, ``momentum``); the default is the role
the format's reference evaluation loads, and ``weights`` picks another role or a copy by its key prefix.
Two copies in the default role that differ make the file ambiguous: it is refused unless a copy is chosen.
Every key belongs to the longest drop or copy prefix it matches, so a head inside a copy can be dropped
while the copy is kept. Names lose the wrapper prefixes a layout declares (DistributedDataParallel's
``module.``) and, anywhere in the chain, the ``_orig_mod.`` that ``torch.compile`` puts before a compiled
module's keys, before any layout looks at them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from moco_bench.core.errors import CheckpointError
from moco_bench.core.rebuild import brief
from moco_bench.core.registry import Registry

FORMATS = Registry("checkpoint format")
_ORDER: list[str] = []
ROLES = ("model", "ema", "teacher", "student", "momentum")
COMPILED = "_orig_mod"  # torch.compile's OptimizedModule keeps the compiled module under this name
# Entries one walk over a checkpoint's nested mappings may visit: a ResNet-152 with two copies and its optimizer
# state has a few thousand. Mappings that hold the same mapping twice, 40 deep, would give 2^40.
MAX_VISITS = 200_000


class SharedTooOften(ValueError):
    """Nested mappings that reference the same mappings over and over (a "billion laughs" file)."""


class Entry(NamedTuple):
    key: str  # as written in the file, relative to the location
    name: str  # the key with wrapper prefixes (DistributedDataParallel's ``module.``) removed
    tensor: torch.Tensor


@dataclass(frozen=True)
class Copy:
    """One copy of the backbone in a file: its role, its name prefix, and what it is (the reason it is
    dropped when another copy is chosen)."""

    role: str
    prefix: str
    what: str


@dataclass(frozen=True)
class Epochs:
    """Pretraining epochs completed, and how the file's fields were read to get them."""

    completed: int | None
    how: str


@dataclass
class Split:
    """A checkpoint's tensors sorted by what the converter does with them."""

    location: str
    backbone: dict[str, tuple[str, torch.Tensor]]  # torchvision key -> (file key, tensor)
    dropped: dict[str, str]  # file key -> reason
    unexpected: list[str]  # file keys no rule of the layout explains
    epochs: Epochs
    weights: dict[str, str] = field(default_factory=dict)  # the copy taken: prefix, role, chosen_by
    copies: list[dict] = field(default_factory=list)  # every copy present, chosen or not


def matches(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _strip(key: str, wrappers: tuple[str, ...]) -> str:
    parts = [p for p in key.split(".") if p != COMPILED] or [key]
    while len(parts) > 1 and parts[0] in wrappers:
        parts = parts[1:]
    return ".".join(parts)


def _key_text(key) -> str:
    return key if isinstance(key, str) else brief(key)


def _walk(tree: Mapping, wrappers: tuple[str, ...], visits: list[int], key: str = "", name: str = ""):
    """(key, name, value) of every leaf of nested mappings, counting visits against :data:`MAX_VISITS`."""
    for k, value in tree.items():
        visits[0] += 1
        if visits[0] > MAX_VISITS:
            raise SharedTooOften(f"walking its nested mappings visits more than {MAX_VISITS:,} entries: mappings "
                                 f"that hold the same mappings over and over (a 'billion laughs' file)")
        sub_key, sub_name = f"{key}{_key_text(k)}", f"{name}{_strip(_key_text(k), wrappers)}"
        if isinstance(value, Mapping):
            yield from _walk(value, wrappers, visits, sub_key + ".", sub_name + ".")
        else:
            yield sub_key, sub_name, value


def flatten(tree: Mapping, wrappers: tuple[str, ...] = ("module",)) -> list[Entry]:
    """Tensors of a (possibly nested) mapping, keyed by dotted paths; other values are not model weights."""
    return [Entry(k, n, v) for k, n, v in _walk(tree, wrappers, [0]) if isinstance(v, torch.Tensor)]


def leaves_of_type(tree: Mapping, kind: type, wrappers: tuple[str, ...] = ()) -> list[tuple[str, str, Any]]:
    """(key, name, value) of every value of type ``kind`` in nested mappings, keyed as :func:`flatten` does."""
    return [(k, n, v) for k, n, v in _walk(tree, wrappers, [0]) if isinstance(v, kind)]


@dataclass(frozen=True)
class Format:
    """One checkpoint layout.

    Attributes:
        name: the ``--format`` name.
        description: what wrote it.
        locate: checkpoint -> (location for messages, the mapping holding the weights), or None if absent.
        copies: the backbone copies the layout knows; the first one's role is the default.
        reference: what the layout's reference evaluation loads (why the default is the default).
        drop: name prefix -> reason, for tensors left out on purpose.
        inner_drop: prefix inside a copy -> reason (a copy's own head, such as MoCo's ``fc`` projection).
        signals: name prefixes that identify the layout; ``top_signals``: top-level keys that do.
        excludes: name prefixes whose presence rules the layout out.
        wrappers: leading key components to remove (``module.`` of DistributedDataParallel).
        rename: maps a key inside a copy to its torchvision key.
        epochs: checkpoint -> pretraining epochs completed, with how they were read.
    """

    name: str
    description: str
    locate: Callable[[Mapping], tuple[str, Mapping] | None]
    copies: tuple[Copy, ...]
    reference: str
    epochs: Callable[[Mapping], Epochs]
    drop: Mapping[str, str] = field(default_factory=dict)
    inner_drop: Mapping[str, str] = field(default_factory=dict)
    signals: tuple[str, ...] = ()
    top_signals: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    wrappers: tuple[str, ...] = ("module",)
    rename: Callable[[str], str] = str  # identity

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
        if any(matches(n, p) for n in names for p in self.excludes):
            return False
        return (any(matches(n, p) for n in names for p in self.signals)
                or any(k in ckpt for k in self.top_signals))

    def owner(self, name: str) -> str | Copy | None:
        """The longest drop or copy prefix ``name`` falls under: a drop reason, a Copy, or None."""
        best: tuple[int, str | Copy] | None = None
        for prefix, owner in [*self.drop.items(), *((c.prefix, c) for c in self.copies)]:
            if matches(name, prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), owner)
        return None if best is None else best[1]

    def __call__(self, ckpt: Mapping, source: str, weights: str | None = None) -> Split:
        found = self.entries(ckpt)
        if found is None:
            raise CheckpointError(f"{source}: not in the {self.name} layout ({self.description}): its weights "
                                  f"container is missing; top-level keys: {_top_keys(ckpt)}")
        location, entries = found
        groups: dict[Copy, list[Entry]] = {}
        dropped, unexpected = {}, []
        for entry in entries:
            owner = self.owner(entry.name)
            if isinstance(owner, Copy):
                groups.setdefault(owner, []).append(entry)
            elif owner is not None:
                dropped[entry.key] = owner
            else:
                unexpected.append(entry.key)
        if not groups:
            prefixes = ", ".join(repr(c.prefix) for c in self.copies)
            raise CheckpointError(f"{source}: no backbone tensors under {prefixes} in {location} ({self.name} "
                                  f"layout); key prefixes seen: {_prefixes(entries)}")
        built = {c: self._backbone(c, groups[c], source) for c in self.copies if c in groups}
        chosen, chosen_by = self._choose(built, weights, source)
        backbone, inner_dropped = built[chosen]
        dropped.update(inner_dropped)
        copies = []
        for copy, (tensors, _) in built.items():
            if copy is not chosen:
                dropped.update({e.key: copy.what for e in groups[copy]})
            copies.append({"prefix": copy.prefix, "role": copy.role, "what": copy.what, "tensors": len(tensors),
                           "chosen": copy is chosen, "same_as_chosen": _same(tensors, backbone)})
        weights_info = {"prefix": chosen.prefix, "role": chosen.role, "chosen_by": chosen_by}
        return Split(location, backbone, dropped, unexpected, self.epochs(ckpt), weights_info, copies)

    def _backbone(self, copy: Copy, entries: list[Entry], source: str):
        """torchvision key -> (file key, tensor) for one copy, and the copy's own heads dropped."""
        backbone: dict[str, tuple[str, torch.Tensor]] = {}
        dropped = {}
        for entry in entries:
            rest = entry.name[len(copy.prefix) + 1:] if copy.prefix else entry.name
            reason = next((r for p, r in self.inner_drop.items() if matches(rest, p)), None)
            if reason is not None:
                dropped[entry.key] = reason
                continue
            target = self.rename(rest)
            if target in backbone:
                raise CheckpointError(f"{source}: {backbone[target][0]!r} and {entry.key!r} both give the "
                                      f"backbone tensor {target!r}")
            backbone[target] = (entry.key, entry.tensor)
        return backbone, dropped

    def _choose(self, built: dict, weights: str | None, source: str) -> tuple[Copy, str]:
        """The copy to convert: the default role, a role by name, or a copy by prefix."""
        present = ", ".join(f"{c.role} ({c.prefix or 'all keys'}.*)" for c in built)
        if weights is None:
            role, chosen_by = self.copies[0].role, f"default: {self.reference}"
            candidates = [c for c in built if c.role == role]
        elif weights in ROLES:
            candidates, chosen_by = [c for c in built if c.role == weights], f"--weights {weights}"
        else:
            candidates, chosen_by = [c for c in built if c.prefix == weights], f"--weights {weights}"
        if not candidates:
            asked = f"--weights {weights}" if weights else f"the default ({self.copies[0].role})"
            raise CheckpointError(f"{source}: this {self.name} checkpoint has no copy of the network matching "
                                  f"{asked}; it holds: {present} (choose with --weights ROLE or --weights PREFIX)")
        first = candidates[0]
        differing = [c for c in candidates[1:] if not _same(built[c][0], built[first][0])]
        if differing and (weights is None or weights in ROLES):
            both = [first, *differing]
            how = _difference(built[first][0], built[differing[0]][0])
            raise CheckpointError(
                f"{source}: {' and '.join(f'{c.prefix}.*' for c in both)} both hold {first.role} weights and differ "
                f"({how}); the file is ambiguous: choose one with "
                + " or ".join(f"--weights {c.prefix}" for c in both))
        return first, chosen_by


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k][1].shape == b[k][1].shape and a[k][1].dtype == b[k][1].dtype and torch.equal(a[k][1], b[k][1]) for k in a)


def _difference(a: dict, b: dict) -> str:
    if a.keys() != b.keys():
        return f"different keys, e.g. {sorted(a.keys() ^ b.keys())[0]}"
    differ = [k for k in a if not (a[k][1].shape == b[k][1].shape and torch.equal(a[k][1], b[k][1]))]
    return f"{len(differ)} of {len(a)} tensors differ, e.g. {differ[0]}"


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
    seen = _prefixes(flatten(ckpt, wrappers=()))
    raise CheckpointError(f"{source}: unknown checkpoint layout; top-level keys: {_top_keys(ckpt)}; key prefixes "
                          f"seen: {seen}; known formats: {', '.join(_ORDER)} (force one with --format)")


def format_names() -> list[str]:
    return list(_ORDER)


def _top_keys(ckpt: Mapping, limit: int = 20) -> str:
    keys = [_key_text(k) for k in ckpt]
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _prefixes(entries: list[Entry], limit: int = 20) -> str:
    counts = Counter(".".join(e.key.split(".")[:2]) for e in entries)
    items = [f"{p} ({n})" for p, n in sorted(counts.items())]
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "") or "none"
