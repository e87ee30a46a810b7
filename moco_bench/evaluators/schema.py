"""The schema every evaluation config shares, the blocks protocol families reuse, and the registry of schemas.

A protocol family (a subpackage of ``moco_bench.evaluators``) declares, in its light ``schema`` module, one
schema per evaluator it implements, the module that registers the evaluator's function, and whether it runs one
process per GPU (DDP, as the linear heads) or one process (which may start its own, as detectron2's launcher
does)::

    register_schema("knn", KNNEvaluation, "moco_bench.evaluators.frozen.knn")

Loading a config needs only the schemas; the (heavy) implementation is imported when the evaluation runs.
Protocol numbers have no defaults here: they come from the YAML files under ``evaluate/``.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional

from moco_bench.core.errors import ConfigError, MocoBenchError
from moco_bench.core.registry import Registry
from moco_bench.core.schema import MAX_SIDE, MISSING, field

NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"  # result files and job names are made from it


class EvaluatorSpec(NamedTuple):
    schema: type
    module: str
    per_gpu_processes: bool  # one process per GPU (DDP), as torchrun starts them; else one process
    takes_pixels: bool  # runs on ``pixels:`` (the flattened image as its only feature, gap; no network)


SCHEMAS = Registry("evaluator")


def register_schema(name: str, schema: type, module: str, per_gpu_processes: bool = False,
                    takes_pixels: bool = False) -> None:
    SCHEMAS.register(name)(EvaluatorSpec(schema, module, per_gpu_processes, takes_pixels))


def load_schemas() -> None:
    """Import the ``schema`` module of every protocol family (subpackage) so that their schemas register."""
    import moco_bench.evaluators as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.ispkg:
            importlib.import_module(f"{package.__name__}.{info.name}.schema")


def spec(name: str) -> EvaluatorSpec:
    load_schemas()
    return SCHEMAS.get(name)


def pixel_protocols() -> list[str]:
    """The evaluators that run on ``pixels:``, the raw-pixel reference line."""
    load_schemas()
    return [name for name in SCHEMAS if SCHEMAS.get(name).takes_pixels]


def evaluation_schema(cfg) -> type:
    """The schema of an evaluation config, chosen by its ``evaluator`` key (for ``load_config``)."""
    name = cfg.get("evaluator")
    if not name:
        raise ConfigError(f"{cfg.get('_source_', 'config')}: an evaluation config needs an 'evaluator' key")
    try:
        return spec(str(name)).schema
    except MocoBenchError as e:
        raise ConfigError(f"{cfg.get('_source_', 'config')}: {e}") from None


def load_evaluation(path, overrides=None):
    """An evaluation config (``evaluate/*.yaml``), checked against its evaluator's schema."""
    from moco_bench.core.config import load_config

    return load_config(path, overrides, schema=evaluation_schema)


@dataclass
class Comparability:
    protocol: Optional[str] = MISSING  # the shipped protocol file (evaluate/<protocol>.yaml); null: none
    published: Optional[str] = None  # the protocol column of results/published/numbers.csv
    requires: Dict[str, Any] = field({})  # key -> {value, reason}
    free_keys: Dict[str, str] = field({})  # key -> why it cannot change a number


@dataclass
class Resources:
    """What the evaluation asks of a machine (the launcher's request; one process per GPU)."""

    gpus: int = field(min=0)
    cpus: int = field(min=1)
    timeout_min: int = field(min=1)


@dataclass
class Evaluation:
    _source_: str = ""
    version: int = MISSING
    evaluator: str = MISSING
    name: str = field(pattern=NAME)
    benchmark: str = field(pattern=NAME)
    variant: str = ""
    comparability: Comparability = MISSING
    resources: Resources = MISSING


@dataclass
class Data:
    """One data vocabulary for every evaluator: a reader of moco_bench.data.DATASETS on a root, two splits."""

    name: str = MISSING  # for tables
    reader: str = MISSING
    root: str = MISSING
    train_split: str = MISSING
    test_split: str = MISSING
    classes: Any = MISSING  # the expected class count, or the class names in label order
    options: Dict[str, Any] = field({})  # reader options (Places205: layout)
    expect: Optional[Dict[str, int]] = None  # published image count per split; a partial copy is an error


@dataclass
class TestTransform:
    """Shorter edge to ``resize``, then a center ``crop`` and/or a ``square`` resize."""

    resize: int = field(min=1, max=MAX_SIDE)
    crop: Optional[int] = field(None, min=1, max=MAX_SIDE)
    square: Optional[int] = field(None, min=1, max=MAX_SIDE)


@dataclass
class Transform:
    mean: List[float] = MISSING
    std: List[float] = field(min=1e-6, each=True)
    test: TestTransform = MISSING


LAYERS = ("feature1", "feature2", "feature3", "feature4", "feature5", "gap")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class Features:
    layers: List[str] = field(choices=LAYERS, each=True, nonempty=True)
    pooling: Dict[str, Any] = MISSING  # layer -> {kernel, stride, padding} or {output_size}
    precision: str = field(choices=PRECISIONS)
    channels_last: bool = MISSING
    # moco_bench.models.inference.RUNTIMES
    runtime: str = field(choices=("auto", "eager", "channels_last", "mkldnn", "inductor"))
