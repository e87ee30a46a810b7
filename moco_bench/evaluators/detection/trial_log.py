"""A detectron2 trial's log: detectron2's, fvcore's and Python's warnings into the trial's own file."""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path


@contextlib.contextmanager
def log_to(path: Path):
    """detectron2's and fvcore's INFO log and the trial's Python warnings into ``path`` (kept after a failure), not
    on the console: one trial logs the model, dataset tables and a line per 20 iterations."""
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s", "%m/%d %H:%M:%S"))
    loggers = [logging.getLogger(n) for n in ("detectron2", "fvcore", "d2.checkpoint", "py.warnings")]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
        lg.propagate = False

    def to_log(message, category, filename, lineno, file=None, line=None):
        loggers[-1].warning(warnings.formatwarning(message, category, filename, lineno, line).rstrip())

    try:
        with warnings.catch_warnings():
            warnings.showwarning = to_log
            yield
    finally:
        for lg, (level, propagate) in zip(loggers, saved):
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate
        handler.close()
