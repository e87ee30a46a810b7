"""A checkpoint file of any supported kind -> plain Python objects and tensors, without running code from it.

The kind is read from the file's first bytes, not its name: safetensors (a JSON header), a torch zip
archive, a legacy torch stream, or a plain pickle (detectron2's ``.pkl``). torch files go through
``torch.load(weights_only=True)`` first; when it refuses a global, the inert unpickler reads the same file
and every object it cannot rebuild becomes a placeholder. Plain pickles go to the inert unpickler directly
(torch.load has no plain-pickle mode). A file that names a code-execution global is refused either way.
"""

from __future__ import annotations

import json
import pickle
import struct
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moco_bench.convert import torch_files
from moco_bench.convert.inert_pickle import InertUnpickler
from moco_bench.convert.safe_pickle import TORCH_SAFE_GLOBALS, last_line, refused_global
from moco_bench.core.errors import CheckpointError

WEIGHTS_ONLY = "torch.load(weights_only=True)"


@dataclass
class LoadedFile:
    """What a checkpoint file holds, and how it was read.

    Attributes:
        obj: the unpickled object (tensors are real tensors; see ``placeholders``).
        reader: how it was read, for the report.
        placeholders: globals the file names that were rebuilt as inert placeholders (never imported or run).
    """

    obj: Any
    reader: str
    placeholders: list[str] = field(default_factory=list)


def read_checkpoint(path: str | Path) -> LoadedFile:
    """Read ``path`` by its content. Raises :class:`CheckpointError` for anything unreadable or hostile."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        head = f.read(16)
    if _is_safetensors(path, head):
        return _read_safetensors(path)
    if head.startswith(b"PK\x03\x04"):
        return _read_torch(path, torch_files.read_zip)
    if head.startswith(torch_files.legacy_prefixes()):
        return _read_torch(path, torch_files.read_legacy)
    return _read_plain_pickle(path)


def _is_safetensors(path: Path, head: bytes) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON object of that length."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 8 + n <= path.stat().st_size


def _read_safetensors(path: Path) -> LoadedFile:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return LoadedFile(dict(load_file(path, device="cpu")), "safetensors")
    except (SafetensorError, json.JSONDecodeError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: damaged or truncated safetensors file ({last_line(e)})") from None


def _read_torch(path: Path, inert_reader: Callable[[Path], tuple[Any, InertUnpickler]]) -> LoadedFile:
    try:
        with torch.serialization.safe_globals(TORCH_SAFE_GLOBALS), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return LoadedFile(torch.load(path, map_location="cpu", weights_only=True), WEIGHTS_ONLY)
    except pickle.UnpicklingError as e:
        why = refused_global(str(e)) or last_line(e)
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint, the file is damaged, truncated or not a "
                              f"PyTorch file ({type(e).__name__}: {last_line(e)})") from None
    try:
        obj, unpickler = inert_reader(path)
    except (pickle.UnpicklingError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint: {WEIGHTS_ONLY} refused it ({why}) and "
                              f"reading it without running anything failed ({last_line(e)})") from None
    return _inert_result(path, obj, unpickler, f"inert unpickler ({WEIGHTS_ONLY} refused {why})")


def _read_plain_pickle(path: Path) -> LoadedFile:
    try:
        with open(path, "rb") as f:
            unpickler = InertUnpickler(f)
            obj = unpickler.load()
    except (pickle.UnpicklingError, OSError) as e:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint, safetensors file or pickle, or damaged "
                              f"({last_line(e)})") from None
    return _inert_result(path, _numpy_to_torch(obj), unpickler, "inert unpickler (a plain pickle)")


def _inert_result(path: Path, obj: Any, unpickler: InertUnpickler, reader: str) -> LoadedFile:
    if unpickler.hostile:
        raise CheckpointError(
            f"{path}: refused: the pickle names {', '.join(unpickler.hostile)}, which no checkpoint needs and "
            f"code-execution payloads use. Nothing from the file was run; do not open it with pickle or "
            f"torch.load(weights_only=False).")
    return LoadedFile(obj, reader, sorted(unpickler.placeholders))


def _numpy_to_torch(obj: Any) -> Any:
    """Numeric numpy arrays (detectron2's weights) become tensors; containers are walked, the rest kept."""
    if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
        return torch.from_numpy(np.array(obj, dtype=obj.dtype.newbyteorder("="), copy=True))
    if type(obj) in (dict, OrderedDict):
        return type(obj)((k, _numpy_to_torch(v)) for k, v in obj.items())
    if type(obj) in (list, tuple):
        return type(obj)(_numpy_to_torch(v) for v in obj)
    return obj
