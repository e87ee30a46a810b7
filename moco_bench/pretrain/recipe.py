"""What a pretraining run records of its recipe: the shipped file it derives from and how it departs from it.

A run names its shipped recipe (``recipe.protocol``: ``pretrain/<protocol>.yaml``) and is compared with it key
by key, as evaluations are with their protocol files. The method and pretraining data recorded come from the
shipped file, never from the run, and every number-changing difference (a precision, a queue size, another data
pipeline) is recorded with both values, so that the tables say which results come from a checkpoint trained off
the published recipe.
"""

from __future__ import annotations

from typing import Any, Dict

from omegaconf import DictConfig, OmegaConf

from moco_bench.core.config import differences, is_free, source_of
from moco_bench.core.errors import ConfigError
from moco_bench.core.paths import project_root

_IGNORED = ("_source_", "recipe")


def recipe_record(cfg: DictConfig) -> Dict[str, Any]:
    """``{protocol, method, pretrain_data, deviations}`` of a run, ``deviations`` as ``{key: {protocol, run}}``."""
    from moco_bench.pretrain.schema import load_recipe

    name = str(cfg.recipe.protocol)
    path = project_root() / "pretrain" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"{source_of(cfg)}: recipe.protocol {name!r}: no shipped recipe {path}")
    shipped = load_recipe(path)
    if str(shipped.recipe.protocol) != name:
        raise ConfigError(f"{path}: a shipped recipe names itself in recipe.protocol ({name!r})")
    free = dict(shipped.recipe.free_keys)
    changes = differences(OmegaConf.to_container(shipped, resolve=False), OmegaConf.to_container(cfg, resolve=False))
    deviations = {k: v for k, v in changes.items() if k.split(".")[0] not in _IGNORED and not is_free(k, free)}
    return {"protocol": name, "method": shipped.recipe.method, "pretrain_data": shipped.recipe.pretrain_data,
            "deviations": deviations}
