"""The schema every evaluation config shares, the blocks protocol families reuse, and the evaluator registry.

A protocol family (a subpackage of ``moco_bench.evaluators``) registers each evaluator it implements once, in its
light ``schema`` module: the config schema, a function that imports and returns the implementation (which may
import heavy libraries: faiss, cyanure, detectron2, so it is imported when an evaluation runs, not when a config
loads), and whether it runs one process per GPU (DDP, as the linear heads) or one process (which may start its
own, as detectron2's launcher does)::

    def _knn():
        from moco_bench.evaluators.frozen.knn import knn
        return knn

    register_evaluator("knn", KNNEvaluation, _knn, takes_pixels=True)

:mod:`moco_bench.evaluators.catalog` imports every family's schema module and answers lookups. Protocol numbers
have no defaults here: they come from the YAML files under ``evaluate/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from moco_bench.core.registry import Registry
from moco_bench.core.schema import MISSING, NAME, field
from moco_bench.data.schema import Data, TestTransform, Transform

__all__ = ["NAME", "Data", "EvaluatorSpec", "Evaluation", "Features", "FrozenFeatures", "TestTransform", "Transform",
           "register_evaluator"]


class EvaluatorSpec(NamedTuple):
    schema: type
    implementation: Callable[[], Callable]  # imports the implementation, returns the evaluator function
    per_gpu_processes: bool  # one process per GPU (DDP), as torchrun starts them; else one process
    takes_pixels: bool  # runs on ``pixels:`` (the flattened image as its only feature, gap; no network)


EVALUATORS = Registry("evaluator")


def register_evaluator(name: str, schema: type, implementation: Callable[[], Callable],
                       per_gpu_processes: bool = False, takes_pixels: bool = False) -> None:
    EVALUATORS.register(name)(EvaluatorSpec(schema, implementation, per_gpu_processes, takes_pixels))


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


@dataclass
class FrozenFeatures(Features):
    """Features extracted once and cached (the frozen-feature and transfer protocols)."""

    batch_size: int = field(min=1)
