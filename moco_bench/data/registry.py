"""Every dataset format moco-bench reads, in one registry, each with the schema of its config entry and its check.

Two kinds (:data:`DATASETS`; a name is unique within its kind, as ``voc`` is both VOC07 classification and the
VOC detection source):

- :class:`SplitReader`: a classification dataset read split by split (``data.reader`` in a config; ImageNet
  folders, VOC07 multi-label, Places205 lists, iNaturalist JSON, WebDataset shards). Its ``options`` schema bounds
  ``data.options``.
- :class:`SourceFormat`: one source of a detectron2 transfer (``datasets.sources.<name>.format``: VOC, COCO, LVIS,
  Cityscapes; the segmentation formats). Its ``schema`` is the whole entry, so a misspelled key (``expct:``) is an
  error when the config loads, not a check silently switched off.

:func:`validate` holds a loaded evaluation config against these schemas (called by ``load_evaluation``, so a suite
is validated source by source before any work); :mod:`moco_bench.data.check` runs the checks on disk. The modules
that register formats are imported by :mod:`moco_bench.data.catalog`, the one place that lists them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from moco_bench.core.errors import ConfigError
from moco_bench.core.registry import Registry
from moco_bench.core.schema import check as check_bounds


@dataclass(frozen=True)
class SplitReader:
    """``open(root, split, transform, *, classes, **options)`` -> a Dataset with ``classes``, ``targets``,
    ``images`` (see :mod:`moco_bench.data.readers`)."""

    open: Callable[..., Any]
    options: Optional[type] = None  # dataclass of data.options; None: the reader takes none


@dataclass(frozen=True)
class SourceFormat:
    """One detectron2 source format.

    ``missing(name, spec) -> [message]``: what is absent (all sources are listed before one error is raised).
    ``summary(name, spec, classes, is_test) -> {"images": n, "fingerprint": hex, ...}``: read once present.
    ``locations``: the keys that only say where files lie (free of comparability when the counts match).
    """

    schema: type
    missing: Callable[[str, Mapping], List[str]]
    summary: Callable[[str, Mapping, Optional[Sequence[str]], bool], dict]
    family: str  # detection | segmentation
    locations: Tuple[str, ...]


DATASETS = {SplitReader: Registry("dataset reader"), SourceFormat: Registry("detectron2 source format")}


def register_reader(name: str, options: Optional[type] = None) -> Callable:
    """Decorator: register a split reader under ``name`` with the schema of its options."""
    def decorator(fn: Callable) -> Callable:
        DATASETS[SplitReader].register(name)(SplitReader(fn, options))
        return fn

    return decorator


def register_source(name: str, fmt: SourceFormat) -> None:
    DATASETS[SourceFormat].register(name)(fmt)


def of_kind(name: str, kind: type, key: str, where: str):
    """The registered format ``name``, which must be a ``kind`` (a reader for ``data.reader``, a source format
    for ``datasets.sources.*.format``)."""
    table = DATASETS[kind]
    if name not in table:
        raise ConfigError(f"{where}: {key} is {name!r}; expected one of {', '.join(table)}")
    return table.get(name)


def _held(node: Any, schema: type, key: str, where: str) -> None:
    """``node`` (a mapping of the config) against a dataclass schema: unknown keys, types, required keys, bounds."""
    plain = OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else dict(node or {})
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), plain)
    except OmegaConfBaseException as e:
        fields = ", ".join(f.name for f in dataclasses.fields(schema))
        raise ConfigError(f"{where}: {key}: {str(e).splitlines()[0]} (its keys: {fields})") from None
    missing = [f.name for f in dataclasses.fields(schema) if OmegaConf.is_missing(merged, f.name)]
    if missing:
        raise ConfigError(f"{where}: {key} needs {', '.join(missing)}")
    check_bounds(merged, schema, where, f"{key}.")


def validate(cfg: Any, where: str) -> None:
    """Hold a config's ``data`` block or ``datasets.sources`` against the formats' schemas (nothing read)."""
    data = cfg.get("data")
    if data is not None and data.get("reader") is not None:
        reader = of_kind(str(data.reader), SplitReader, "data.reader", where)
        if reader.options is not None or data.get("options"):
            _held(data.get("options") or {}, reader.options or _NoOptions, "data.options", where)
        splits = {str(v) for k, v in data.items() if k.endswith("_split") and v is not None}  # train, test, val
        stray = sorted(k for k, v in (data.get("expect") or {}).items() if v is not None and k not in splits)
        if stray:
            raise ConfigError(f"{where}: data.expect names {stray}, not a split this config reads "
                              f"({', '.join(sorted(splits))}): a misspelled split would switch its count check off")
    datasets = cfg.get("datasets")
    for name, spec in ((datasets.get("sources") or {}).items() if datasets is not None else ()):
        if spec is None:  # a source of a base file that this protocol drops
            continue
        key = f"datasets.sources.{name}"
        if spec.get("format") is None:
            raise ConfigError(f"{where}: {key} has no format (an override of a source whose name has a dot takes "
                              "brackets: datasets.sources[lvis_v0.5_val].json=...)")
        fmt = of_kind(str(spec.get("format")), SourceFormat, f"{key}.format", where)
        _held(spec, fmt.schema, key, where)


@dataclass
class _NoOptions:
    """The options schema of a reader that takes none."""


def location_keys() -> Tuple[str, ...]:
    """Keys that say only where files lie, for every registered format."""
    keys: Dict[str, None] = {"data.root": None}
    for name in DATASETS[SourceFormat]:
        keys.update({f"datasets.sources.*.{loc}": None for loc in DATASETS[SourceFormat].get(name).locations})
    return tuple(keys)
