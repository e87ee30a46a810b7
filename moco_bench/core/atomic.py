"""Atomic writes: a reader sees the old file (or folder) or the whole new one, never half of it.

Files get the permissions the user's umask gives new files (``mkstemp`` alone would make them 0600), so a
shared results folder stays readable by the team.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from moco_bench.core.errors import DataError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def human_bytes(n: float) -> str:
    """``1.50 GiB``, ``12.0 MiB``, ``300 B``: a size in the largest binary unit it reaches."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}" if n / size < 10 else f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def named(error: OSError, path: Path) -> OSError:
    """``error`` with the file it concerns: a full disk raises ENOSPC from ``write`` with no file name."""
    if error.filename is None:
        return type(error)(error.errno, error.strerror or str(error), str(path))
    return error


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        raise named(e, path) from e
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: str) -> None:
    if os.path.exists(tmp):
        os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(path: Path, obj) -> None:
    """``torch.save`` into memory, then :func:`atomic_write_bytes`: an interrupted write keeps the old file."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


@contextmanager
def replaced_folder(path: Path, replaceable: Callable[[Path], bool]) -> Iterator[Path]:
    """A new folder, built beside ``path`` and swapped in when the block ends, so that an interrupted or failed
    build leaves the previous one as it was. An existing ``path`` is replaced only where ``replaceable(path)``
    says it holds a previous build, never a folder of other files. The swap is two renames: for an instant
    between them ``path`` is absent, but it is never half-written."""
    path = Path(path)
    if path.exists() and not replaceable(path):
        raise DataError(f"{path}: exists and holds files this command did not write; choose a new or empty folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new"))
    try:
        os.chmod(new, 0o777 & ~_umask())
        yield new
        old = new.with_suffix(".old")
        if path.exists():
            os.rename(path, old)
        os.rename(new, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
