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
# Fields the report reads, each with the types it accepts (None: absent or null); checked when a record is read.
_READ_FIELDS = {
    **{("evaluation", k): (str,) for k in ("name", "protocol")},
    **{("evaluation", k): (str, type(None)) for k in ("variant", "benchmark", "dataset", "dataset_root", "split",
                                                      "layer", "comparability_note", "published_protocol")},
    ("evaluation", "comparable"): (bool, type(None)), ("evaluation", "comparability"): (dict, type(None)),
    ("evaluation", "seeds"): (list, type(None)),
    **{("checkpoint", k): (str, type(None)) for k in ("path", "sha256", "arch", "label")},
    ("checkpoint", "epochs"): (int, type(None)), ("checkpoint", "recipe"): (dict, type(None)),
    ("timing", "end"): (str, type(None)), ("per_seed",): (dict, type(None)), ("examples",): (dict, type(None)),
    ("error",): (str, type(None)),
}
_RECIPE_FIELDS = {"method": (str, type(None)), "epochs": (int, str, type(None)), "arch": (str, type(None)),
                  "pretrain_data": (str, type(None)), "deviations": (dict, type(None))}


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


def _get(record: Mapping[str, Any], keys: tuple):
    for key in keys:
        record = record.get(key) if isinstance(record, Mapping) else None
    return record


def check_readable(record: Mapping[str, Any]) -> None:
    """:func:`validate`, then the types of every field the report reads, so that a hand-edited or planted record
    is refused with the field that is wrong instead of breaking the tables; per-seed values must be finite."""
    validate(record)
    recipe = {("checkpoint", "recipe", k): types for k, types in _RECIPE_FIELDS.items()}
    for keys, types in {**_READ_FIELDS, **recipe}.items():
        value = _get(record, keys)
        if not isinstance(value, types) or (int in types and isinstance(value, bool)):
            raise SchemaError(f"field {'.'.join(keys)!r} should be {' or '.join(t.__name__ for t in types)}, "
                              f"got {type(value).__name__}")
    for name, values in (record.get("per_seed") or {}).items():
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   and math.isfinite(v) for v in values):
            raise SchemaError(f"per_seed {name!r} is not a list of finite numbers")


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
    examples: Dict[str, Any] | None = None,
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
    if examples:
        record["examples"] = examples  # the per-example outputs' sidecar file (results/examples.py)
    validate(record)
    return record
