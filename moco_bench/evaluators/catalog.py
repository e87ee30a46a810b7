"""Every evaluator, found by name: the one module that imports each protocol family's ``schema`` module (where it
registers its evaluators, :func:`moco_bench.evaluators.schema.register_evaluator`), and loads evaluation configs.

Adding a family: a subpackage with a ``schema`` module, imported here.
"""

from __future__ import annotations

from typing import Callable, List

from moco_bench.core.config import load_config, source_of
from moco_bench.core.errors import ConfigError, MocoBenchError
from moco_bench.data.catalog import validate_datasets
from moco_bench.evaluators.detection import schema as _detection  # noqa: F401 (each registers its evaluators)
from moco_bench.evaluators.frozen import schema as _frozen  # noqa: F401
from moco_bench.evaluators.linear import schema as _linear  # noqa: F401
from moco_bench.evaluators.schema import EVALUATORS, EvaluatorSpec
from moco_bench.evaluators.segmentation import schema as _segmentation  # noqa: F401
from moco_bench.evaluators.transfer import schema as _transfer  # noqa: F401


def spec(name: str) -> EvaluatorSpec:
    return EVALUATORS.get(name)


def get(name: str) -> Callable:
    """The evaluator function registered as ``name``, its implementation imported on first use."""
    return spec(name).implementation()


def pixel_protocols() -> List[str]:
    """The evaluators that run on ``pixels:``, the raw-pixel reference line."""
    return [name for name in EVALUATORS if EVALUATORS.get(name).takes_pixels]


def evaluation_schema(cfg) -> type:
    """The schema of an evaluation config, chosen by its ``evaluator`` key (for ``load_config``)."""
    where = source_of(cfg)
    name = cfg.get("evaluator")
    if not name:
        raise ConfigError(f"{where}: an evaluation config needs an 'evaluator' key")
    try:
        return spec(str(name)).schema
    except MocoBenchError as e:
        raise ConfigError(f"{where}: {e}") from None


def load_evaluation(path, overrides=None):
    """An evaluation config (``evaluate/*.yaml``), checked against its evaluator's schema and its datasets' entries
    against their formats' schemas (:mod:`moco_bench.data.registry`)."""
    cfg = load_config(path, overrides, schema=evaluation_schema)
    validate_datasets(cfg, str(path))
    return cfg
