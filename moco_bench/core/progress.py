"""Progress bars that keep logs readable: drawn only on a terminal.

When the output is a file, a CI log or ``nohup``, tqdm's carriage-return frames become a wall of lines; there
the bars are off and the loops log one line per epoch or stage instead. ``MOCO_BENCH_PROGRESS=1`` forces them
on, ``0`` off.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def enabled() -> bool:
    forced = os.environ.get("MOCO_BENCH_PROGRESS")
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stderr.isatty()


def bar(iterable=None, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``, disabled off a terminal (or where the caller disables it)."""
    kwargs["disable"] = kwargs.get("disable", False) or not enabled()
    return tqdm(iterable, **kwargs)
