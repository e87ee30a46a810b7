"""What native libraries write straight to a file descriptor, captured so that it can be counted, not repeated.

cyanure's C++ solver writes its warnings to file descriptor 2 (``std::cerr``, in ANSI colour), under Python's
``sys.stderr``, so neither ``warnings`` nor ``contextlib.redirect_stderr`` sees them: a VOC07 SVM evaluation
printed "Your problem is prone to numerical instability" dozens of times. :func:`captured` points the
descriptor at a temporary file for the duration of a call and hands back the lines; :func:`forward_except`
counts the known lines and passes every other line on, so nothing unexpected is lost.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator, List

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@contextlib.contextmanager
def captured(fd: int = 2) -> Iterator[List[str]]:
    """Lines written to ``fd`` inside the block (by any code of this process), ANSI colours removed; the list
    is filled when the block ends."""
    lines: List[str] = []
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(fd)
    try:
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), fd)
            try:
                yield lines
            finally:
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
                os.dup2(saved, fd)
                tmp.seek(0)
                lines += [_ANSI.sub("", line) for line in tmp.read().decode(errors="replace").splitlines()]
    finally:
        os.close(saved)


def forward_except(lines: List[str], known: str) -> int:
    """The number of ``lines`` containing ``known``; the other non-blank lines go to ``sys.stderr``."""
    others = [line for line in lines if known not in line and line.strip()]
    if others:
        sys.stderr.write("\n".join(others) + "\n")
    return sum(known in line for line in lines)
