"""The result record: one JSON file per evaluation (DESIGN.md, "Results schema").

A record carries everything that produced its numbers: the resolved protocol config, the checkpoint's
hash and detected format, library versions, git revision and timings. ``validate`` is applied on write
and on read, so a foreign or hand-edited file is rejected with the field that is wrong.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any, Dict, Mapping

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "skipped")
_REQUIRED = {
    "schema": int,
    "evaluation": dict,
    "checkpoint": dict,
    "metrics": dict,
    "environment": dict,
    "timing": dict,
    "status": str,
}
_EVALUATION_KEYS = ("name", "protocol", "config")


class SchemaError(ValueError):
    """A record does not follow the results schema."""


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def validate(record: Mapping[str, Any]) -> None:
    """Raise :class:`SchemaError` naming the first field that is missing or of the wrong type."""
    if not isinstance(record, Mapping):
        raise SchemaError("expected a JSON object")
    for key, typ in _REQUIRED.items():
        if key not in record:
            raise SchemaError(f"missing field {key!r}")
        if not isinstance(record[key], typ):
            raise SchemaError(f"field {key!r} should be {typ.__name__}, got {type(record[key]).__name__}")
    if record["schema"] != SCHEMA_VERSION:
        raise SchemaError(f"schema version {record['schema']} (this moco-bench reads {SCHEMA_VERSION})")
    for key in _EVALUATION_KEYS:
        if key not in record["evaluation"]:
            raise SchemaError(f"missing field 'evaluation.{key}'")
    if record["status"] not in STATUSES:
        raise SchemaError(f"status {record['status']!r} is not one of {STATUSES}")
    for name, value in record["metrics"].items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SchemaError(f"metric {name!r} is not a number: {value!r}")
        if not math.isfinite(value):
            raise SchemaError(f"metric {name!r} is not finite: {value!r}")
    if record["status"] != "ok" and not record.get("error"):
        raise SchemaError(f"status {record['status']!r} needs an 'error' text")


def make_record(
    *,
    evaluation: Dict[str, Any],
    checkpoint: Dict[str, Any],
    metrics: Dict[str, float],
    environment: Dict[str, Any],
    timing: Dict[str, Any],
    status: str = "ok",
    error: str | None = None,
    per_seed: Dict[str, list] | None = None,
    details: Dict[str, Any] | None = None,
) -> Dict[str, Any]:
    record = {
        "schema": SCHEMA_VERSION,
        "evaluation": evaluation,
        "checkpoint": checkpoint,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "per_seed": per_seed or {},
        "details": details or {},
        "environment": environment,
        "timing": timing,
        "status": status,
        "error": error,
    }
    validate(record)
    return record
