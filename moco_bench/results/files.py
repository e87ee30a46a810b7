"""Reading a file found in a results folder that anyone may have written into: only regular files, never more than
a stated size, never blocking (a FIFO named ``*.json``), never a device (a link to ``/dev/zero``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class NotReadable(ValueError):
    """A results-folder entry that is not a regular file of a sane size; the message names it and why."""


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


def read_regular(path: Path | str, limit: int) -> bytes:
    """The bytes of ``path`` (a link is followed) when it is a regular file of at most ``limit`` bytes.

    The kind is checked before opening (opening a device or a FIFO can block or have effects) and again on the
    opened descriptor, which is opened non-blocking, so a file swapped in between is caught too.
    """
    path = Path(path)
    before = os.stat(path)
    if not stat.S_ISREG(before.st_mode):
        raise NotReadable(f"{path}: {_kind(before.st_mode)}, not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        now = os.fstat(f.fileno())
        if not stat.S_ISREG(now.st_mode):
            raise NotReadable(f"{path}: {_kind(now.st_mode)}, not a regular file")
        if now.st_size > limit:
            raise NotReadable(f"{path}: {_mib(now.st_size)}, larger than the {_mib(limit)} such a file can be")
        data = f.read(now.st_size + 1)  # read(n) allocates n bytes first: never more than the file holds
    if len(data) > now.st_size:
        raise NotReadable(f"{path}: grew while it was read")
    return data
