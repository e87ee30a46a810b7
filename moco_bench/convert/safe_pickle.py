"""Loading untrusted checkpoints without running code from them.

PyTorch files go through ``torch.load(weights_only=True)``, whose unpickler only builds tensors and plain
containers. detectron2 ``.pkl`` files are plain pickles; :func:`read_pickle` reads them with an unpickler
that resolves only the few globals a dict of numpy arrays needs, so a pickle that names any other callable
(``os.system``, ``builtins.eval`` ...) is refused before anything is called.
"""

from __future__ import annotations

import _codecs
import argparse
import collections
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moco_bench.core.errors import CheckpointError

# The callables numpy's own pickling uses (numpy 1 names them numpy.core.*, numpy 2 numpy._core.*).
_reconstruct = np.zeros(1).__reduce__()[0]
_scalar = np.float64(0).__reduce__()[0]
_frombuffer = np.zeros(1).__reduce_ex__(5)[0]
# The only globals read_pickle resolves: what numpy arrays and scalars, bytes under protocol 2 and ordered
# dicts need. None of them can run code; they only wrap values the same unpickler produced.
_PLAIN_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _reconstruct for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): _scalar for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _frombuffer for core in ("core", "_core")},
    # protocol 2 writes bytes as _codecs.encode(str, "latin1"); encoding a string is all it can do.
    ("_codecs", "encode"): _codecs.encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
# Added to torch's weights_only allowlist: metadata that training scripts save beside the weights (DINO and
# torchvision's reference scripts save their argparse namespace; numpy scalars and arrays appear in meters).
# numpy globals go by name so that files written under numpy 1 (numpy.core) load under numpy 2 (numpy._core);
# torch's unpickler also wants the class of each numeric dtype it rebuilds (numpy.dtypes.Float64DType ...).
_TORCH_SAFE_GLOBALS = [argparse.Namespace,
                       *((fn, f"{module}.{name}") for (module, name), fn in _PLAIN_GLOBALS.items()
                         if module.startswith("numpy")),
                       *{type(np.dtype(code)) for code in np.typecodes["All"] if code not in "OSUVMm"}]


def torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` on CPU, with every failure turned into a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals(_TORCH_SAFE_GLOBALS), warnings.catch_warnings():
            # A plain pickle given as a checkpoint makes torch warn about its protocol before refusing it.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = _refused_global(str(e))
        if refused:
            raise CheckpointError(
                f"{path}: refused to load: the file asks for {refused}, which is not a tensor or plain container "
                f"(loading is weights_only; nothing from the file was run). If you trust the file, re-save only "
                f"its state dict with the library that wrote it.") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_last_line(e)})") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint, the file is damaged, truncated or not a "
                              f"PyTorch file ({type(e).__name__}: {_last_line(e)})") from None


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PLAIN_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"GLOBAL {module}.{name}") from None


def read_pickle(path: Path) -> Any:
    """Read a pickle that may hold only numpy arrays, numbers, strings and plain containers."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f).load()
    except pickle.UnpicklingError as e:
        refused = _refused_global(str(e))
        if refused:
            raise CheckpointError(f"{path}: refused to load: the pickle asks for {refused}; only numpy arrays and "
                                  f"plain containers are accepted (nothing from the file was run)") from None
        raise CheckpointError(f"{path}: not a readable pickle ({_last_line(e)})") from None
    except (EOFError, ValueError, TypeError, IndexError, MemoryError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable pickle, damaged or truncated "
                              f"({type(e).__name__}: {_last_line(e)})") from None
    _reject_object_arrays(obj, path)
    return obj


def _reject_object_arrays(obj: Any, path: Path) -> None:
    """Object arrays only hold what the restricted unpickler built, but a weights file has no use for them."""
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        raise CheckpointError(f"{path}: holds a numpy array of Python objects; expected numeric arrays")
    if isinstance(obj, dict):
        for value in obj.values():
            _reject_object_arrays(value, path)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _reject_object_arrays(value, path)


def _refused_global(message: str) -> str | None:
    """The ``GLOBAL module.name`` an unpickler refused, if that is why it stopped."""
    words = message[message.find("GLOBAL "):].split() if "GLOBAL " in message else []
    return f"GLOBAL {words[1]}" if len(words) > 1 else None


def _last_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__
