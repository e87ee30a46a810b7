"""A lock per piece of work, so that two processes never do it twice or write over each other."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from moco_bench.core.errors import Busy


@contextlib.contextmanager
def exclusive(path: Path, what: str, enabled: bool = True):
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the block; raise :class:`Busy` at once,
    naming the holder's pid, when another process holds it. The lock dies with its process."""
    if not enabled:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise Busy(f"{what} is running in another process (pid {holder}; lock {path})") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
