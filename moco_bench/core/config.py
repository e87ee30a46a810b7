"""YAML configs loaded with OmegaConf, checked against a schema.

A config may name one ``base:`` file (relative to itself): the child overrides its values and may add blocks
of its own (a low-shot protocol is the SVM protocol plus a ``lowshot`` block). The merged config is then held
against its schema (:mod:`moco_bench.core.schema`): an unknown key anywhere is an error naming it, a value of
the wrong type or out of range is refused, and a required key left unset is named. Command-line overrides are
``key=value`` dotlists and may only change keys that exist. Every config states the ``version`` of this format.
Two resolvers make paths portable: ``${datasets:VOC2007}`` (under ``$MOCO_BENCH_DATASETS``) and
``${embedded:minivoc}`` (under the embedded-data cache).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from moco_bench.core import paths
from moco_bench.core.atomic import atomic_write_text
from moco_bench.core.errors import ConfigError
from moco_bench.core.schema import check, missing_keys, open_mappings
from moco_bench.core.yaml_guard import check_yaml_file

VERSION = 1  # the config format this moco-bench reads
ABSENT = "(absent)"  # the value :func:`differences` reports for a key one side lacks
OmegaConf.register_new_resolver("datasets", lambda sub="": str(paths.datasets_root() / sub), replace=True)
OmegaConf.register_new_resolver("embedded", lambda sub="": str(paths.data_cache() / "embedded" / sub), replace=True)


def _load_file(path: Path, seen: tuple = ()) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    check_yaml_file(path)
    try:
        cfg = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException) as e:
        raise ConfigError(f"{path}: not a valid YAML config: {e}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = cfg.pop("base", None)
    if base is not None:
        parent = _load_file(path.parent / str(base), seen + (path.resolve(),))
        cfg = OmegaConf.merge(parent, cfg)
    return cfg


def _error_key(e: OmegaConfBaseException) -> str:
    return str(getattr(e, "full_key", None) or str(e).splitlines()[0])


def load_config(path: str | Path, overrides: Optional[Iterable[str]] = None,
                schema: Optional[type | Callable[[DictConfig], type]] = None) -> DictConfig:
    """Load ``path`` (following ``base:``), check it against ``schema``, apply ``key=value`` overrides.

    ``schema`` is a dataclass, or a function of the merged file (e.g. choosing by its ``evaluator`` key).

    Returns a struct config (no key can be added afterwards) whose ``_source_`` names the file.

    Raises:
        ConfigError: missing or malformed file, another format version, an unknown key (in the file or an
            override), a value of the wrong type or out of range, or a required key left unset.
    """
    path = Path(path)
    cfg = _load_file(path)
    version = cfg.get("version")
    if version != VERSION:
        raise ConfigError(f"{path}: config format version {version!r}; this moco-bench reads version {VERSION} "
                          "(a 'version: 1' line, in the file or its base)")
    cfg["_source_"] = str(path)
    if schema is not None and not isinstance(schema, type):
        schema = schema(cfg)
    if schema is not None:
        try:
            cfg = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        except OmegaConfBaseException as e:
            raise ConfigError(f"{path}: {_error_key(e)}: {str(e).splitlines()[0]}") from None
    OmegaConf.set_struct(cfg, True)
    if schema is not None:
        open_mappings(cfg, schema)
    overrides = list(overrides or [])
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} for {path}: expected key=value")
    if overrides:
        cfg = _overridden(cfg, overrides, path)
    if schema is not None:
        missing = missing_keys(cfg)
        if missing:
            raise ConfigError(f"{path}: required key(s) not set: {', '.join(missing)}")
        check(cfg, schema, str(path))
    return cfg


def _overridden(cfg: DictConfig, overrides: list, path: Path) -> DictConfig:
    """``cfg`` with the ``key=value`` overrides merged, one at a time so that a refusal names its override."""
    for item in overrides:
        try:
            patch = OmegaConf.from_dotlist([item])
        except yaml.YAMLError as e:  # a YAML tag (only plain values are read) or a malformed value
            raise ConfigError(f"{path}: override {item!r}: its value is not a plain YAML value "
                              f"({str(e).splitlines()[0]})") from None
        except OmegaConfBaseException as e:
            raise ConfigError(f"{path}: override {item!r} refused: {str(e).splitlines()[0]}") from None
        try:
            cfg = OmegaConf.merge(cfg, patch)
        except OmegaConfBaseException as e:
            raise ConfigError(f"{path}: override of {_error_key(e)!r} refused: {str(e).splitlines()[0]} "
                              f"(override {item!r})") from None
    return cfg


def source_of(cfg: Mapping[str, Any]) -> str:
    """The file a loaded config came from (its ``_source_``), for messages; ``config`` for one built in code."""
    return str(cfg.get("_source_") or "config")


def resolved(cfg: DictConfig) -> dict:
    """The config as plain data with every interpolation resolved (what gets recorded with results)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source_of(cfg)}: cannot resolve: {e}") from None


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the resolved config beside an output, atomically."""
    atomic_write_text(Path(path), OmegaConf.to_yaml(OmegaConf.create(resolved(cfg))))


def differences(shipped: Any, run: Any, prefix: str = "") -> Dict[str, Dict[str, Any]]:
    """``{key: {"protocol": shipped value, "run": run value}}`` for every difference of two plain configs, at the
    shallowest key where they part (a block replaced by null is one difference, not one per key inside it)."""
    if isinstance(shipped, dict) and isinstance(run, dict):
        out: Dict[str, Dict[str, Any]] = {}
        for key in sorted(set(shipped) | set(run), key=str):
            out.update(differences(shipped.get(key, ABSENT), run.get(key, ABSENT), f"{prefix}{key}."))
        return out
    return {prefix[:-1]: {"protocol": shipped, "run": run}} if shipped != run else {}


def is_free(key: str, patterns: Mapping[str, str]) -> bool:
    """Whether ``key`` is one of the free ``patterns``, lies under one, or matches one as a glob."""
    return any(key == p or key.startswith(p + ".") or fnmatch.fnmatchcase(key, p) for p in patterns)
