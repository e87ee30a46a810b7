"""Schemas of the frozen-feature protocols: VOC07 SVM, low-shot SVM, weighted kNN."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from moco_bench.core.schema import MISSING, field
from moco_bench.evaluators.schema import Data, Evaluation, FrozenFeatures, Transform, register_evaluator


@dataclass
class SVM:
    backend: str = field(choices=("cyanure", "sklearn"))
    costs: List[float] = field(min=1e-12, each=True, nonempty=True)
    class_weight: Dict[str, float] = MISSING  # {positive, negative}
    intercept_scaling: float = field(min=1e-12)
    loss: str = field(choices=("squared_hinge",))
    penalty: str = field(choices=("l2",))
    tol: float = field(min=0)
    cyanure_tol: float = field(min=0)
    cyanure_solver: str = MISSING
    cyanure_seed_tol: float = field(min=0)
    max_iter: int = field(min=1)
    cv_folds: int = field(min=2)
    normalize_eps: float = field(min=0)
    dtype: str = field(choices=("float32", "float64"))
    difficult_in_train: str = field(choices=("negative", "ignore"))
    n_jobs: Optional[int] = field(None, min=1)


@dataclass
class Lowshot:
    k: List[int] = field(min=1, each=True, nonempty=True)
    seeds: List[int] = field(each=True, nonempty=True)
    negatives_per_positive: Optional[int] = field(None, min=1)
    cost_selection: str = field(choices=("cv", "test"))


@dataclass
class KNN:
    k: List[int] = field(min=1, each=True, nonempty=True)
    temperature: float = field(min=1e-6)
    query_chunk: int = field(min=1)
    train_chunk: int = field(min=1)
    backend: str = field(choices=("auto", "torch", "faiss"))  # the search (moco_bench.evaluators.search)


@dataclass
class FrozenEvaluation(Evaluation):
    data: Data = MISSING
    transform: Transform = MISSING
    features: FrozenFeatures = MISSING


@dataclass
class SVMEvaluation(FrozenEvaluation):
    svm: SVM = MISSING


@dataclass
class LowshotEvaluation(SVMEvaluation):
    lowshot: Lowshot = MISSING


@dataclass
class KNNEvaluation(FrozenEvaluation):
    knn: KNN = MISSING


def _voc07_svm():
    from moco_bench.evaluators.frozen.svm import voc07_svm

    return voc07_svm


def _voc07_lowshot_svm():
    from moco_bench.evaluators.frozen.lowshot import voc07_lowshot_svm

    return voc07_lowshot_svm


def _knn():
    from moco_bench.evaluators.frozen.knn import knn

    return knn


register_evaluator("voc07_svm", SVMEvaluation, _voc07_svm)
register_evaluator("voc07_lowshot_svm", LowshotEvaluation, _voc07_lowshot_svm)
register_evaluator("knn", KNNEvaluation, _knn, takes_pixels=True)
