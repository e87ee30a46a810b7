"""A converted backbone kept in a results folder, so that every job and process of one ``eval-all`` (submitit jobs,
one process per GPU, a cluster's nodes) reads the conversion eval-all made instead of converting the checkpoint
again: one conversion per checkpoint, its key report and provenance unchanged.

The file is a plain ``torch.save`` of tensors and JSON text, read back with ``weights_only=True``; it names the
checkpoint's sha256, and a copy made from another file is refused.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from moco_bench.convert.backbone import ConvertedBackbone
from moco_bench.convert.report import KeyReport
from moco_bench.core.atomic import atomic_torch_save
from moco_bench.core.errors import CheckpointError

VERSION = 1
FIELDS = ("arch", "format", "path", "sha256", "epoch", "recipe")


def save_converted(backbone: ConvertedBackbone, path: Path) -> Path:
    """Write ``backbone`` (once: an existing copy of the same checkpoint is kept) and return its path."""
    path = Path(path)
    if path.is_file() and _meta(path).get("sha256") == backbone.sha256:
        return path
    meta = {name: getattr(backbone, name) for name in FIELDS}
    meta["report"] = dataclasses.asdict(backbone.report)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(path, {"version": VERSION, "meta": json.dumps(meta), "state_dict": backbone.state_dict})
    return path


def _read(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged or foreign file
        raise CheckpointError(f"{path}: not a converted backbone of this moco-bench ({type(e).__name__}: {e})") \
            from None
    if not isinstance(obj, dict) or obj.get("version") != VERSION or not isinstance(obj.get("meta"), str):
        raise CheckpointError(f"{path}: not a converted backbone of this moco-bench (version {VERSION})")
    return obj


def _meta(path: Path) -> dict:
    return json.loads(_read(path)["meta"])


def load_converted(path: Path, sha256: str) -> ConvertedBackbone:
    """The backbone saved by :func:`save_converted`, which must be the conversion of the checkpoint ``sha256``."""
    obj = _read(Path(path))
    meta = json.loads(obj["meta"])
    if meta.get("sha256") != sha256:
        raise CheckpointError(f"{path}: converted from another checkpoint ({meta.get('sha256')}, not {sha256})")
    report = KeyReport(**meta.pop("report"))
    return ConvertedBackbone(state_dict=obj["state_dict"], report=report, **meta)
