"""Suites: which evaluations a run of eval-all makes (``moco_bench.engine.eval_all`` runs them).

A suite (``suites/*.yaml``) lists evaluations by their ``evaluate/`` config and overrides::

    version: 1
    name: demo
    evaluations:
      - config: evaluate/demo/voc07_svm.yaml
        overrides: [svm.workers=2]

All configs are loaded and checked before anything runs, so a typo fails in a second, not after the first
hour.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from omegaconf import DictConfig, ListConfig

from moco_bench.core.config import load_config
from moco_bench.core.errors import ConfigError
from moco_bench.core.paths import project_file
from moco_bench.engine.runner import check_config
from moco_bench.evaluators.schema import load_evaluation

log = logging.getLogger(__name__)


@dataclass
class SuiteEntry:
    config_path: Path
    overrides: List[str]
    cfg: DictConfig = field(repr=False)

    @property
    def name(self) -> str:
        return self.cfg.name


@dataclass
class Suite:
    name: str
    path: Path
    entries: List[SuiteEntry]


def load_suite(path: Path | str, extra_overrides: Optional[List[str]] = None) -> Suite:
    """Load a suite and every config it names; raises ConfigError naming the suite and entry on any problem."""
    path = project_file(path)
    raw = load_config(path)
    items = raw.get("evaluations")
    if not isinstance(items, ListConfig) or not items:
        raise ConfigError(f"{path}: a suite needs a non-empty 'evaluations' list")
    entries, names = [], set()
    for i, item in enumerate(items):
        if not isinstance(item, DictConfig) or "config" not in item:
            raise ConfigError(f"{path}: evaluations[{i}] needs a 'config' key (path to an evaluate/ config)")
        unknown = set(item.keys()) - {"config", "overrides"}
        if unknown:
            raise ConfigError(f"{path}: evaluations[{i}] has unknown keys {sorted(unknown)}")
        listed = item.get("overrides")
        if listed is not None and not isinstance(listed, ListConfig):
            raise ConfigError(f"{path}: evaluations[{i}].overrides should be a list of key=value strings")
        overrides = [str(o) for o in (listed or [])] + list(extra_overrides or [])
        config_path = project_file(str(item.config))
        try:
            cfg = load_evaluation(config_path, overrides)
            check_config(cfg)
        except ConfigError as e:
            raise ConfigError(f"{path}: evaluations[{i}]: {e}") from None
        except Exception as e:  # an unknown evaluator is a MocoBenchError too; keep the suite's name on it
            raise ConfigError(f"{path}: evaluations[{i}] ({item.config}): {e}") from None
        if cfg.name in names:
            raise ConfigError(f"{path}: two evaluations are named {cfg.name!r}; give one a name= override")
        names.add(cfg.name)
        entries.append(SuiteEntry(config_path, overrides, cfg))
    return Suite(str(raw.get("name", path.stem)), path, entries)
