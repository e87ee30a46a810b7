"""A lock per piece of work, so that two processes never do it twice or write over each other.

Lock files are opened without following a symbolic link and must be regular files: a link planted where a lock
goes (``.knn_demo.lock -> ~/.bashrc``) would otherwise have the holder's pid written through it. The holder's pid
is written into the file, so that a waiting process can say who holds it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import time
from pathlib import Path

from moco_bench.core.errors import Busy, DataError

log = logging.getLogger(__name__)
STOPPED_PATIENCE_ENV = "MOCO_BENCH_LOCK_STOPPED_S"  # seconds a stopped holder is waited for (default 60)
REMIND_S = 60.0


def _open(path: Path):
    """The lock file ``path``, created if needed (mode from the umask), opened read-write without following a
    link; a link, FIFO or device there is refused."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DataError(f"{path}: the lock file is a symbolic link (to {os.readlink(path)}); it is not followed: "
                            "remove the link") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(f"{path}: the lock file is not a regular file; remove it")
    return os.fdopen(fd, "r+")


def _holder(f) -> str:
    f.seek(0)
    return f.read(32).strip() or "?"


def _mark(f) -> None:
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()


@contextlib.contextmanager
def exclusive(path: Path, what: str, enabled: bool = True):
    """Hold an exclusive ``flock`` on ``path`` for the block; raise :class:`Busy` at once, naming the holder's
    pid, when another process holds it. The lock dies with its process."""
    if not enabled:
        yield
        return
    path = Path(path)
    with _open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"{what} is running in another process (pid {_holder(f)}; lock {path})") from None
        _mark(f)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _stopped(pid: str) -> bool:
    """Whether process ``pid`` is stopped (Ctrl-Z, SIGSTOP), from /proc where there is one."""
    try:
        fields = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return False
    return fields[0] in ("T", "t")


@contextlib.contextmanager
def waiting(path: Path, what: str, poll: float = 0.5):
    """Hold an exclusive ``flock`` on ``path``, waiting while another process holds it (it is doing the same
    work), with a line saying who every minute; give up with :class:`Busy` when the holder has been stopped
    (``$MOCO_BENCH_LOCK_STOPPED_S`` seconds, default 60): a stopped process would be waited for forever."""
    path = Path(path)
    patience = float(os.environ.get(STOPPED_PATIENCE_ENV, 60))
    with _open(path) as f:
        said, stopped_since = 0.0, None
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pid, now = _holder(f), time.monotonic()
                if now - said >= REMIND_S:
                    log.info("%s: waiting for pid %s, which holds %s", what, pid, path)
                    said = now
                stopped_since = (stopped_since or now) if _stopped(pid) else None
                if stopped_since is not None and now - stopped_since >= patience:
                    raise Busy(f"{what}: lock {path} is held by pid {pid}, which is stopped (Ctrl-Z or SIGSTOP): "
                               f"resume it (fg, or kill -CONT {pid}) or end it, then run again") from None
                time.sleep(poll)
        _mark(f)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
