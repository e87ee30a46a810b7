"""YAML configs loaded with OmegaConf.

A config may name one ``base:`` file (relative to itself) whose values it overrides; demo variants are a
base protocol plus a few changed numbers. Command-line overrides are ``key=value`` dotlists and may only
change keys that exist, so a typo is an error instead of a silently ignored setting. Two resolvers make
paths portable: ``${datasets:VOC2007}`` (under ``$MOCO_BENCH_DATASETS``) and ``${embedded:minivoc}``
(under the embedded-data cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from moco_bench import paths
from moco_bench.errors import ConfigError
from moco_bench.results.atomic import atomic_write_text

OmegaConf.register_new_resolver("datasets", lambda sub="": str(paths.datasets_root() / sub), replace=True)
OmegaConf.register_new_resolver("embedded", lambda sub="": str(paths.data_cache() / "embedded" / sub), replace=True)


def _load_file(path: Path, seen: tuple = ()) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    try:
        cfg = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException) as e:
        raise ConfigError(f"{path}: not a valid YAML config: {e}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = cfg.pop("base", None)
    if base is not None:
        parent = _load_file(path.parent / str(base), seen + (path.resolve(),))
        try:
            OmegaConf.set_struct(parent, True)
            cfg = OmegaConf.merge(parent, cfg)
        except OmegaConfBaseException as e:
            raise ConfigError(f"{path}: sets a key its base {base} does not have: {e}") from None
        OmegaConf.set_struct(cfg, False)
    return cfg


def load_config(path: str | Path, overrides: Optional[Iterable[str]] = None) -> DictConfig:
    """Load ``path`` (following ``base:``), apply ``key=value`` overrides and return a struct config.

    Raises:
        ConfigError: missing or malformed file, or an override naming a key the config does not have.
    """
    path = Path(path)
    cfg = _load_file(path)
    cfg.setdefault("_source_", str(path))
    OmegaConf.set_struct(cfg, True)
    overrides = list(overrides or [])
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} for {path}: expected key=value")
    if overrides:
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or str(e).splitlines()[0]
            raise ConfigError(f"{path}: no config key {key!r} (overrides: {' '.join(overrides)})") from None
    return cfg


def resolved(cfg: DictConfig) -> dict:
    """The config as plain data with every interpolation resolved (what gets recorded with results)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{cfg.get('_source_', 'config')}: cannot resolve: {e}") from None


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the resolved config beside an output, atomically."""
    atomic_write_text(Path(path), OmegaConf.to_yaml(OmegaConf.create(resolved(cfg))))
