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

from moco_bench.core.errors import CheckpointError
from moco_bench.core.inert_pickle import InertUnpickler

# Added to torch's weights_only allowlist: DINO's and torchvision's reference scripts save their argparse
# namespace. numpy is not added: torch's unpickler would apply a numpy dtype's state (its flags among it)
# unchecked, and a forged state makes numpy read raw bytes as object pointers. Files with numpy arrays or
# scalars go to the inert unpickler instead, which checks that state before applying it.
TORCH_SAFE_GLOBALS = [argparse.Namespace]


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
