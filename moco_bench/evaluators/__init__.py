"""Evaluators: one subpackage per protocol family (``frozen``, ``linear``, ``detection``, ...).

Each family declares its evaluators' config schemas in a light ``schema`` module (registered in
:data:`~moco_bench.evaluators.schema.SCHEMAS` with the module implementing each) and registers the evaluator
functions in :data:`EVALUATORS` (contract: ``base.py``). The implementations import heavy libraries (faiss,
cyanure, detectron2), so :func:`get` imports only the one an evaluation needs, when it runs.
"""

import importlib
from typing import Callable

from moco_bench.evaluators.base import EVALUATORS, EvalContext, EvalOutput
from moco_bench.evaluators.schema import spec


def get(name: str) -> Callable:
    """The evaluator function registered as ``name``, its implementation imported on first use."""
    importlib.import_module(spec(name).module)
    return EVALUATORS.get(name)


__all__ = ["EVALUATORS", "EvalContext", "EvalOutput", "get"]
