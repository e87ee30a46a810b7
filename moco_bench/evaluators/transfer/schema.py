"""Schemas of the transfer family: multinomial logistic regression on frozen GAP features with the cost chosen
on a validation split (``transfer_logreg``), and the fast probe grid on cached features (``probe_grid``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from moco_bench.core.schema import MISSING, field
from moco_bench.evaluators.schema import Data, Evaluation, FrozenFeatures, TestTransform, Transform, register_evaluator

METRICS = ("top1", "mean_per_class", "voc11_map")


@dataclass
class InterpolatedTest(TestTransform):
    interpolation: str = field(choices=("bilinear", "bicubic"))


@dataclass
class TransferTransform(Transform):
    test: InterpolatedTest = MISSING


@dataclass
class TransferData(Data):
    val_split: Optional[str] = None  # the dataset's official validation split; null: carve it from train


@dataclass
class Validation:
    """Where the cost is chosen: the official val split, else a seeded fraction of train (never the test split)."""

    fraction: float = field(min=0, max=1)  # of train, when data.val_split is null
    seed: int = MISSING
    rule: str = field(choices=("numpy_shuffle",))  # np.random.seed(seed); shuffle(range(n)); first fraction: val


@dataclass
class LogReg:
    metric: str = field(choices=METRICS)
    wd_log10: List[float] = field(each=True, nonempty=True)  # [start, stop] of the logspace of weight decays
    wd_count: int = field(min=1)  # C = 1 / wd over the grid
    solver: str = field(choices=("auto", "torch", "sklearn"))  # auto: torch on a GPU, scikit-learn on a CPU
    max_iter: int = field(min=1)
    tol: float = field(min=0)
    warm_start: bool = MISSING  # each fit of the grid starts from the previous one's coefficients
    dtype: str = field(choices=("float32", "float64"))  # the torch solver's precision


@dataclass
class TransferEvaluation(Evaluation):
    data: TransferData = MISSING
    transform: TransferTransform = MISSING
    features: FrozenFeatures = MISSING
    validation: Validation = MISSING
    logreg: LogReg = MISSING


@dataclass
class Grid:
    """The probe grid: every (layer, lr) head trained together on cached features, one pass per epoch."""

    lrs: List[float] = field(min=0, each=True, nonempty=True)
    epochs: int = field(min=1)
    batch_size: int = field(min=1)
    momentum: float = field(min=0, max=1)
    weight_decay: float = field(min=0)
    schedule: str = field(choices=("cosine", "constant"))
    holdout_fraction: float = field(min=0, max=1)  # of train, the part that picks the head (never the test split)
    seed: int = MISSING
    device_batch: int = field(min=1)  # rows moved to the device at once (memory only)


@dataclass
class ProbeEvaluation(Evaluation):
    data: Data = MISSING
    transform: Transform = MISSING
    features: FrozenFeatures = MISSING
    grid: Grid = MISSING


def _transfer_logreg():
    from moco_bench.evaluators.transfer.logreg import transfer_logreg

    return transfer_logreg


def _probe_grid():
    from moco_bench.evaluators.transfer.probe import probe_grid

    return probe_grid


register_evaluator("transfer_logreg", TransferEvaluation, _transfer_logreg)
register_evaluator("probe_grid", ProbeEvaluation, _probe_grid)
