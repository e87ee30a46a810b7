"""A checkpoint file of any supported kind -> plain Python objects and tensors, without running code from it.

The kind is read from the file's first bytes, not its name: safetensors (a JSON header), a torch zip
archive, a legacy torch stream, or a plain pickle (detectron2's ``.pkl``). Every pickle is checked for its
shape before anything reads it (:func:`moco_bench.convert.torch_files.precheck`), and a sharded state dict
(DTensors, which need the run's process group) is refused with how to gather it. torch files then go through
``torch.load(weights_only=True)``; when it refuses a global, the inert unpickler reads the same file and
every object it cannot rebuild becomes a placeholder. Plain pickles go to the inert unpickler directly
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
from moco_bench.convert.safe_pickle import TORCH_SAFE_GLOBALS, last_line, refused_global
from moco_bench.core.errors import CheckpointError
from moco_bench.core.inert_pickle import InertUnpickler
from moco_bench.core.pickle_scan import PickleBomb

WEIGHTS_ONLY = "torch.load(weights_only=True)"
_GATHER = ("gather a full state dict in the training run and save that: on every rank sd = torch.distributed."
           "checkpoint.state_dict.get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, "
           "cpu_offload=True)), then torch.save(sd, path) on rank 0")


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
    if path.is_dir() and (path / ".metadata").is_file():
        raise CheckpointError(f"{path}: a torch.distributed.checkpoint folder (one shard file per rank); make one "
                              f"file of it with torch.distributed.checkpoint.format_utils.dcp_to_torch_save(folder, "
                              f"'full.pth') and convert that")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        return _read_torch(path, torch_files.read_zip, zipped=True)
    if head.startswith(torch_files.legacy_prefixes()):
        return _read_torch(path, torch_files.read_legacy, zipped=False)
    if _is_safetensors(path, head):
        return _read_safetensors(path)
    return _read_plain_pickle(path)


def _is_safetensors(path: Path, head: bytes) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON object of that length."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (n,) = struct.unpack("<Q", head[:8])
    if 8 + n > path.stat().st_size:
        raise CheckpointError(f"{path}: a safetensors file whose header length ({n:,} bytes) is larger than the "
                              f"file ({path.stat().st_size:,} bytes): truncated or damaged")
    return True


def _read_safetensors(path: Path) -> LoadedFile:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return LoadedFile(dict(load_file(path, device="cpu")), "safetensors")
    except (SafetensorError, json.JSONDecodeError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: damaged or truncated safetensors file ({last_line(e)})") from None


def _read_torch(path: Path, inert_reader: Callable[[Path], tuple[Any, InertUnpickler]], zipped: bool) -> LoadedFile:
    try:
        _refuse_sharded(path, torch_files.precheck(path, zipped))
    except PickleBomb as e:
        raise _bomb(path, e) from None
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint, the file is damaged, truncated or not a "
                              f"PyTorch file ({last_line(e)})") from None
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
    except PickleBomb as e:
        raise _bomb(path, e) from None
    except (pickle.UnpicklingError, OSError) as e:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint, safetensors file or pickle, or damaged "
                              f"({last_line(e)})") from None
    return _inert_result(path, _numpy_to_torch(obj, {}), unpickler, "inert unpickler (a plain pickle)")


def _bomb(path: Path, e: PickleBomb) -> CheckpointError:
    return CheckpointError(f"{path}: refused: {e}; nothing in it was built or run")


def _refuse_sharded(path: Path, names: set[str]) -> None:
    """DTensor / ShardedTensor weights are one rank's shards of each tensor, rebuilt only inside the run's
    process group (torch would fail on its first collective, far from the file)."""
    sharded = sorted(n for n in names if n.endswith((".DTensor", ".ShardedTensor")) and n.startswith("torch.dist"))
    if sharded:
        raise CheckpointError(f"{path}: a sharded state dict ({', '.join(sharded)}: FSDP2, or FSDP's "
                              f"SHARDED_STATE_DICT), which holds one rank's shard of each tensor; {_GATHER}")


def _inert_result(path: Path, obj: Any, unpickler: InertUnpickler, reader: str) -> LoadedFile:
    _refuse_sharded(path, unpickler.placeholders)
    if unpickler.hostile:
        raise CheckpointError(
            f"{path}: refused: the pickle names {', '.join(unpickler.hostile)}, which no checkpoint needs and "
            f"code-execution payloads use. Nothing from the file was run; do not open it with pickle or "
            f"torch.load(weights_only=False).")
    return LoadedFile(obj, reader, sorted(unpickler.placeholders))


def _numpy_to_torch(obj: Any, done: dict[int, Any]) -> Any:
    """Numeric numpy arrays (detectron2's weights) become tensors; containers are walked, the rest kept.

    ``done`` maps each container already converted (by id) to its result, so a container the pickle
    references many times is converted once (a list of two references to the list below, 40 deep, is 40
    lists, not 2^40).
    """
    if id(obj) in done:
        return done[id(obj)][1]
    if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
        out = torch.from_numpy(np.array(obj, dtype=obj.dtype.newbyteorder("="), copy=True))
    elif type(obj) in (dict, OrderedDict):
        out = type(obj)((k, _numpy_to_torch(v, done)) for k, v in obj.items())
    elif type(obj) in (list, tuple):
        out = type(obj)(_numpy_to_torch(v, done) for v in obj)
    else:
        return obj
    done[id(obj)] = (obj, out)  # the source is kept so that its id is not reused during the walk
    return out
