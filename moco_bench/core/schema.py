"""Config schemas: dataclasses that say which keys a config may hold, of which type, in which range.

A schema is merged under the YAML (OmegaConf structured configs), so an unknown key is an error naming it and a
value of the wrong type is refused. Protocol numbers have no default here (``MISSING``): they come from the
YAML files, which name their sources; a schema only bounds them. :func:`field` attaches the bounds, and
:func:`check` enforces them on the loaded config, before any work is done.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

from omegaconf import MISSING, DictConfig, OmegaConf

from moco_bench.core.errors import ConfigError

__all__ = ["MAX_SIDE", "MISSING", "NAME", "check", "field", "flatten", "missing_keys"]
MAX_SIDE = 4096  # the largest image side a transform may ask for: every protocol uses 1,024 px or less
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"  # names that result files and job names are made from


def field(default: Any = MISSING, *, min: Optional[float] = None, max: Optional[float] = None,
          choices: Optional[Sequence[Any]] = None, pattern: Optional[str] = None, each: bool = False,
          nonempty: bool = False) -> Any:
    """A schema field with bounds: ``min``/``max`` for numbers, ``choices`` for a closed set of values,
    ``pattern`` (a regular expression the whole text must match) for names; ``each`` applies them to every
    element of a list, ``nonempty`` refuses an empty list. Mutable defaults are copied per instance. Every number
    of every field must be finite (NaN compares false with any bound, so it would pass them all)."""
    meta = {k: v for k, v in (("min", min), ("max", max), ("choices", choices), ("pattern", pattern))
            if v is not None}
    meta["each"] = each
    if nonempty:
        meta["nonempty"] = True
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _fields(schema: type) -> Iterator[Tuple[str, Any, dict]]:
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        yield f.name, hints[f.name], dict(f.metadata)


def _nested(hint: Any) -> Optional[type]:
    """The dataclass a field holds (``X`` or ``Optional[X]``), else None."""
    candidates = [hint, *typing.get_args(hint)]
    return next((c for c in candidates if dataclasses.is_dataclass(c)), None)


def _non_finite(value: Any) -> Optional[float]:
    """The first NaN or infinite number in a value (lists and mappings searched), else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return value
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (list, tuple)) else ()
    return next((bad for v in items if (bad := _non_finite(v)) is not None), None)


def _violation(value: Any, meta: dict) -> Optional[str]:
    bad = _non_finite(value)
    if bad is not None:
        return f"{bad} is not a finite number"
    if meta.get("nonempty") and isinstance(value, (list, tuple)) and not value:
        return "an empty list (at least one value is needed)"
    values = list(value) if meta.get("each") and isinstance(value, (list, tuple)) else [value]
    for v in values:
        if "choices" in meta and v not in meta["choices"]:
            return f"{v!r} is not one of {list(meta['choices'])}"
        if "pattern" in meta and not re.fullmatch(meta["pattern"], str(v)):
            return f"{v!r} does not match {meta['pattern']}"
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if "min" in meta and v < meta["min"]:
            return f"{v} is below its minimum {meta['min']}"
        if "max" in meta and v > meta["max"]:
            return f"{v} is above its maximum {meta['max']}"
    return None


def check(cfg: DictConfig, schema: type, source: str, prefix: str = "") -> None:
    """Raise :class:`ConfigError` naming the first value outside its field's bounds (values are resolved)."""
    for name, hint, meta in _fields(schema):
        key = f"{prefix}{name}"
        node = cfg.get(name)
        inner = _nested(hint)
        if inner is not None:
            if node is not None:
                check(node, inner, source, f"{key}.")
            continue
        if node is None:
            continue
        value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        problem = _violation(value, meta)
        if problem:
            raise ConfigError(f"{source}: {key}: {problem}")


def open_mappings(cfg: DictConfig, schema: type) -> None:
    """Let free-form mappings (fields typed ``Dict[...]``, e.g. ``d2_overrides``) take new keys from overrides,
    while every other block of a struct config keeps refusing unknown keys."""
    for name, hint, _ in _fields(schema):
        node = cfg._get_node(name) if name in cfg else None
        if not isinstance(node, DictConfig) or node._is_none() or node._is_interpolation():
            continue
        inner = _nested(hint)
        if inner is not None:
            open_mappings(node, inner)
        elif typing.get_origin(hint) is dict or dict in typing.get_args(hint) or any(
                typing.get_origin(a) is dict for a in typing.get_args(hint)):
            OmegaConf.set_struct(node, False)


def missing_keys(cfg: DictConfig, prefix: str = "") -> list:
    """Keys the schema requires (``MISSING``) that the config does not set, without resolving anything."""
    out = []
    for key in cfg.keys():
        if OmegaConf.is_missing(cfg, key):
            out.append(f"{prefix}{key}")
            continue
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_none() and not node._is_interpolation():
            out += missing_keys(node, f"{prefix}{key}.")
    return out


def flatten(tree: Any, prefix: str = "") -> Dict[str, Any]:
    """``{"a.b.c": leaf}`` of nested mappings; lists are leaves (a changed list is one difference)."""
    if isinstance(tree, Mapping):
        out: Dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: tree}
