"""Strict loading of untrusted pickles: nothing but data, or a refusal.

detectron2 ``.pkl`` files are plain pickles; :func:`read_pickle` accepts only the numpy arrays and plain
containers such a file needs, so a pickle that names any other callable (``os.system``, ``builtins.eval``
...) is refused, and nothing it names is ever imported or called. :data:`TORCH_SAFE_GLOBALS` widens
``torch.load(weights_only=True)`` by the metadata training scripts save beside the weights.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from moco_bench.convert.inert_pickle import InertUnpickler
from moco_bench.core.errors import CheckpointError

# The callables numpy's own pickling uses (numpy 1 names them numpy.core.*, numpy 2 numpy._core.*).
_reconstruct = np.zeros(1).__reduce__()[0]
_scalar = np.float64(0).__reduce__()[0]
_frombuffer = np.zeros(1).__reduce_ex__(5)[0]
# What numpy arrays and scalars need, by the names numpy 1 (numpy.core) and numpy 2 (numpy._core) write.
_NUMPY_GLOBALS = {
    "numpy.ndarray": np.ndarray,
    "numpy.dtype": np.dtype,
    **{f"numpy.{core}.multiarray._reconstruct": _reconstruct for core in ("core", "_core")},
    **{f"numpy.{core}.multiarray.scalar": _scalar for core in ("core", "_core")},
    **{f"numpy.{core}.numeric._frombuffer": _frombuffer for core in ("core", "_core")},
}
# Added to torch's weights_only allowlist: metadata that training scripts save beside the weights (DINO and
# torchvision's reference scripts save their argparse namespace; numpy scalars and arrays appear in meters).
# numpy globals go by name so that files written under numpy 1 load under numpy 2; torch's unpickler also
# wants the class of each numeric dtype it rebuilds (numpy.dtypes.Float64DType ...). Void, object and string
# dtype classes stay out: BUILD on those could forge an unflagged object field.
TORCH_SAFE_GLOBALS = [argparse.Namespace, *((fn, name) for name, fn in _NUMPY_GLOBALS.items()),
                      *{type(np.dtype(code)) for code in np.typecodes["All"] if code not in "OSUVMm"}]


def read_pickle(path: Path) -> Any:
    """Read a pickle that may hold only numeric numpy arrays, numbers, strings and plain containers.

    The inert unpickler reads it, so nothing it names is imported or run; every other global it names is
    refused, all of them listed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            unpickler = InertUnpickler(f)
            obj = unpickler.load()
    except (pickle.UnpicklingError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable pickle, damaged or truncated ({last_line(e)})") from None
    if unpickler.placeholders:
        raise CheckpointError(f"{path}: refused to load: the pickle asks for GLOBAL "
                              f"{', '.join(sorted(unpickler.placeholders))}; only numeric numpy arrays and plain "
                              f"containers are accepted (nothing from the file was run)")
    return obj


def refused_global(message: str) -> str | None:
    """The ``GLOBAL module.name`` an unpickler refused, if that is why it stopped."""
    words = message[message.find("GLOBAL "):].split() if "GLOBAL " in message else []
    return f"GLOBAL {words[1]}" if len(words) > 1 else None


def last_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__
