"""Evaluators: one subpackage per protocol family (``frozen``, ``linear``, ``detection``, ``segmentation``).

Each family registers its evaluators once, in its light ``schema`` module (the config schema and a function
importing the implementation: :func:`moco_bench.evaluators.schema.register_evaluator`); the implementations import
heavy libraries (faiss, cyanure, detectron2), so :func:`get` imports only the one an evaluation needs, when it
runs. The modules directly in this package are what families share (the evaluator contract, feature extraction
and its cache, the neighbour search and vote); a family imports another family only where
``tests/test_structure.py`` declares it.
"""

from moco_bench.evaluators.base import EvalContext, EvalOutput
from moco_bench.evaluators.catalog import get, load_evaluation, pixel_protocols, spec

__all__ = ["EvalContext", "EvalOutput", "get", "load_evaluation", "pixel_protocols", "spec"]
