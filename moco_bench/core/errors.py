"""User-facing errors.

Every error raised for bad input derives from :class:`MocoBenchError`; the CLI prints its message (which
names the offending file and what was expected) without a traceback and exits with status 2.
"""


class MocoBenchError(Exception):
    """Bad input or an unmet precondition, explained for the user."""


class ConfigError(MocoBenchError):
    """A config file or override is malformed or names an unknown key."""


class DataError(MocoBenchError):
    """A dataset on disk is missing, incomplete or malformed."""


class CheckpointError(MocoBenchError):
    """A checkpoint cannot be read, recognized or converted."""


class ResultExistsError(MocoBenchError):
    """A finished result is already on disk and ``force`` was not given; ``path`` is that result's file."""

    def __init__(self, message: str, path=None):
        super().__init__(message)
        self.path = path


class DatasetNotFound(DataError):
    """A dataset's folder or annotation file is absent (eval-all reports the evaluation as skipped)."""


class MissingDependency(MocoBenchError):
    """An optional library (detectron2, faiss-gpu) is not installed; the message says how to install it."""


class TrainingDiverged(MocoBenchError):
    """A loss became NaN or infinite; the message says where (epoch, step) and what was kept."""


def describe(exc: BaseException) -> str:
    """One line saying what went wrong. torch's DataLoader re-raises a worker's exception with the text
    "Caught X in DataLoader worker process N" and the original traceback; the original message is its last line."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text.splitlines()[0] if text else type(exc).__name__


class Busy(MocoBenchError):
    """Another process holds the lock of the same work (an evaluation running elsewhere); nothing was done."""
