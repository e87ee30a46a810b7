"""Suites: which evaluations a run of eval-all makes (``moco_bench.engine.eval_all`` runs them).

A suite (``suites/*.yaml``) lists evaluations by their ``evaluate/`` config and overrides::

    version: 1
    name: demo
    evaluations:
      - config: evaluate/demo/voc07_svm.yaml
        overrides: [svm.workers=2]

All configs are loaded and checked before anything runs, so a typo fails in a second, not after the first
hour; ``eval-all`` then holds every evaluation against the checkpoint (moco_bench/engine/fit.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf

from moco_bench.core.config import load_config
from moco_bench.core.errors import ConfigError, MocoBenchError
from moco_bench.core.paths import config_file
from moco_bench.engine.runner import check_config
from moco_bench.evaluators.catalog import load_evaluation

log = logging.getLogger(__name__)


@dataclass
class SuiteEntry:
    config_path: Path
    overrides: List[str]  # the suite's own for this entry, then the suite-wide ones that apply
    cfg: DictConfig = field(repr=False)
    applied: List[str] = field(default_factory=list)  # the suite-wide overrides that reached this entry

    @property
    def name(self) -> str:
        return self.cfg.name


@dataclass
class Suite:
    name: str
    path: Path
    entries: List[SuiteEntry]


def load_suite(path: Path | str, extra_overrides: Optional[List[str]] = None, only: Optional[List[str]] = None,
               skip: Optional[List[str]] = None) -> Suite:
    """Load a suite (a shipped one by name, or a path) and every config it names; raises ConfigError naming the
    suite and entry on any problem.

    ``extra_overrides`` apply to every evaluation that has the key (``arch=resnet18`` reaches the linear
    protocols, which name an architecture, and leaves the kNN one alone); one that no evaluation has is an error.
    ``only`` / ``skip``: evaluation names to keep / leave out (unknown names are errors)."""
    path = config_file(path, "suites")
    raw = load_config(path)
    items = raw.get("evaluations")
    if not isinstance(items, ListConfig) or not items:
        raise ConfigError(f"{path}: a suite needs a non-empty 'evaluations' list")
    extra, used = list(extra_overrides or []), set()
    entries = []
    for i, item in enumerate(items):
        entry = _entry(path, i, item, extra)
        used |= set(entry.applied)
        entries.append(entry)
    unused = [o for o in extra if o not in used]
    if unused:
        raise ConfigError(f"{path}: override(s) {', '.join(unused)}: no evaluation of the suite has that key")
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{path}: two evaluations are named {duplicates[0]!r}; give one a name= override")
    for option, wanted in (("--only", only), ("--skip", skip)):
        unknown = [n for n in wanted or [] if n not in names]
        if unknown:
            raise ConfigError(f"{option} {','.join(unknown)}: not in suite {path.stem} ({', '.join(names)})")
    kept = [e for e in entries if (not only or e.name in only) and e.name not in (skip or [])]
    if not kept:
        raise ConfigError(f"{path}: --only/--skip leave no evaluation to run")
    return Suite(str(raw.get("name", path.stem)), path, kept)


def _entry(path: Path, i: int, item, extra: List[str]) -> SuiteEntry:
    if not isinstance(item, DictConfig) or "config" not in item:
        raise ConfigError(f"{path}: evaluations[{i}] needs a 'config' key (path to an evaluate/ config)")
    unknown = set(item.keys()) - {"config", "overrides"}
    if unknown:
        raise ConfigError(f"{path}: evaluations[{i}] has unknown keys {sorted(unknown)}")
    listed = item.get("overrides")
    if listed is not None and not isinstance(listed, ListConfig):
        raise ConfigError(f"{path}: evaluations[{i}].overrides should be a list of key=value strings")
    own = [str(o) for o in (listed or [])]
    try:
        config_path = config_file(str(item.config), "evaluate")
        cfg = load_evaluation(config_path, own)
        applied = [o for o in extra if _has_key(cfg, o.partition("=")[0])]
        cfg = load_evaluation(config_path, own + applied) if applied else cfg
        check_config(cfg)
    except ConfigError as e:
        raise ConfigError(f"{path}: evaluations[{i}]: {e}") from e
    except MocoBenchError as e:  # an unknown evaluator; keep the suite's name on it
        raise ConfigError(f"{path}: evaluations[{i}] ({item.config}): {e}") from e
    return SuiteEntry(config_path, own + applied, cfg, applied)


def _has_key(cfg: DictConfig, key: str) -> bool:
    """Whether ``key`` is in ``cfg``, or under one of its free-form mappings (``d2_overrides.SOLVER.MAX_ITER``)."""
    node = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return isinstance(node, DictConfig) and not OmegaConf.is_struct(node)
        node = node._get_node(part)
        if isinstance(node, DictConfig) and not node._is_none() and not OmegaConf.is_struct(node):
            return True
    return True
