"""Strict loading of untrusted pickles: the allowlists that need no placeholder.

detectron2 ``.pkl`` files are plain pickles; :func:`read_pickle` reads them with an unpickler that resolves
only the few globals a dict of numpy arrays needs, so a pickle that names any other callable (``os.system``,
``builtins.eval`` ...) is refused before anything is called. :data:`TORCH_SAFE_GLOBALS` widens
``torch.load(weights_only=True)`` by the metadata training scripts save beside the weights.
"""

from __future__ import annotations

import _codecs
import argparse
import collections
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from moco_bench.errors import CheckpointError

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
TORCH_SAFE_GLOBALS = [argparse.Namespace,
                      *((fn, f"{module}.{name}") for (module, name), fn in _PLAIN_GLOBALS.items()
                        if module.startswith("numpy")),
                      *{type(np.dtype(code)) for code in np.typecodes["All"] if code not in "OSUVMm"}]


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PLAIN_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"GLOBAL {module}.{name}") from None


def restricted_load(path: Path) -> Any:
    """Unpickle with only the numpy and container globals above; refusals raise ``pickle.UnpicklingError``."""
    with open(path, "rb") as f:
        return _RestrictedUnpickler(f).load()


def read_pickle(path: Path) -> Any:
    """Read a pickle that may hold only numpy arrays, numbers, strings and plain containers."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        obj = restricted_load(path)
    except pickle.UnpicklingError as e:
        refused = refused_global(str(e))
        if refused:
            raise CheckpointError(f"{path}: refused to load: the pickle asks for {refused}; only numpy arrays and "
                                  f"plain containers are accepted (nothing from the file was run)") from None
        raise CheckpointError(f"{path}: not a readable pickle ({last_line(e)})") from None
    except (EOFError, ValueError, TypeError, IndexError, MemoryError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable pickle, damaged or truncated "
                              f"({type(e).__name__}: {last_line(e)})") from None
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


def refused_global(message: str) -> str | None:
    """The ``GLOBAL module.name`` an unpickler refused, if that is why it stopped."""
    words = message[message.find("GLOBAL "):].split() if "GLOBAL " in message else []
    return f"GLOBAL {words[1]}" if len(words) > 1 else None


def last_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__
