"""Evaluators, one module per protocol family, registered in :data:`EVALUATORS` (contract: ``base.py``).

The modules import heavy libraries (faiss, cyanure, detectron2), so they are imported on first use by
:func:`load_all` rather than with the package.
"""

import importlib

from moco_bench.evaluators.base import EVALUATORS, EvalContext, EvalOutput

MODULES = ("svm", "knn", "linear", "detection")


def load_all() -> None:
    for name in MODULES:
        importlib.import_module(f"moco_bench.evaluators.{name}")


__all__ = ["EVALUATORS", "EvalContext", "EvalOutput", "load_all"]
