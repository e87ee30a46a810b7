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
    """A finished result is already on disk and ``force`` was not given."""


class DatasetNotFound(DataError):
    """A dataset's folder or annotation file is absent (eval-all reports the evaluation as skipped)."""


class MissingDependency(MocoBenchError):
    """An optional library (detectron2, faiss-gpu) is not installed; the message says how to install it."""
