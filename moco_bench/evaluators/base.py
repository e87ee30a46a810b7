"""The evaluator contract.

An evaluator is a function registered (with its config schema, by its family's ``schema`` module:
:func:`moco_bench.evaluators.schema.register_evaluator`) under the name that evaluation configs give in their
``evaluator:`` key::

    def voc07_svm(backbone: ConvertedBackbone, cfg: DictConfig, ctx: EvalContext) -> EvalOutput: ...

It reads the protocol's numbers from ``cfg`` (never from code), may write logs and artifacts under
``ctx.out_dir``, times its stages with ``ctx.stage(name)``, and returns an :class:`EvalOutput`. It does not
write the result record: :func:`moco_bench.engine.runner.run_evaluation` does that, adding the
checkpoint, the environment and the timings.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional


def needs(*checks: Callable[[], None]) -> Callable:
    """Declare what an evaluator needs installed (each check raises MissingDependency, naming the install route):
    the runner calls them before the dataset check, so a missing library is said first."""
    def decorator(fn: Callable) -> Callable:
        fn.needs = checks
        return fn

    return decorator


@dataclass
class EvalOutput:
    """What an evaluator measured.

    Attributes:
        metrics: flat ``name -> number`` (``mAP``, ``top1@k20``, ``feature5_top1``, ``AP50``).
        per_seed: ``metric -> [value per seed/trial]`` where the protocol repeats trials.
        details: anything else worth keeping (per-class AP, chosen costs, curves).
        info: fields for the record's ``evaluation`` block: dataset, split, layer, pooling, seeds,
            variant (a protocol variant, e.g. ``lowshot cost chosen on test``). Whether a result is comparable
            with published numbers is derived from its config by the runner (moco_bench/comparability.py).
        examples: per-example outputs on the test images (hits, or scores and targets, per metric), which the
            runner keeps beside the record for the report's intervals (moco_bench/results/examples.py).
    """

    metrics: Dict[str, float]
    per_seed: Dict[str, List[float]] = field(default_factory=dict)
    details: Dict[str, Any] = field(default_factory=dict)
    info: Dict[str, Any] = field(default_factory=dict)
    examples: Dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalContext:
    """Where and how an evaluation runs."""

    out_dir: Path
    cache_dir: Path
    device: str = "cpu"
    workers: int = 2
    seconds: Dict[str, float] = field(default_factory=dict)
    data_check: Optional[Dict[str, dict]] = None  # the runner's dataset check (moco_bench/data/check.py), if run

    @contextlib.contextmanager
    def stage(self, name: str):
        """Time a stage; the seconds land in the record's ``timing.seconds``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
