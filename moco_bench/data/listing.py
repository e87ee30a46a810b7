"""What a dataset copy is, independent of where it lies: a fingerprint of its sorted file list."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable


def fingerprint(names: Iterable[str]) -> str:
    """sha256 (hex, first 16 digits) of the sorted names, one per line: two copies with the same files under
    the same relative names have the same fingerprint wherever their roots are."""
    digest = hashlib.sha256()
    for name in sorted(str(n) for n in names):
        digest.update(name.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()[:16]


def relative_names(paths: Iterable[str | Path], root: str | Path) -> list[str]:
    """``paths`` relative to ``root`` where they lie under it (absolute otherwise)."""
    base = os.path.abspath(root)
    out = []
    for p in paths:
        full = os.path.abspath(p)
        out.append(os.path.relpath(full, base) if full.startswith(base + os.sep) else full)
    return out
