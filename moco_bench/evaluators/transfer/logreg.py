"""Linear transfer by logistic regression on frozen GAP features (Ericsson et al. 2021, after Kornblith et al.
2019): the cost is chosen on a validation split only, then the classifier is refit on train + val and scored
once on the test split.

The validation split is the dataset's own where it has one (``data.val_split``), else a seeded fraction of
train (``validation``); the test split is read after the choice, and nothing computed on it reaches the choice
(``tests/test_transfer_protocol.py`` corrupts the test labels and finds the same cost). Multi-label sets (VOC)
fit one binary classifier per class with the same cost and are scored by 11-point mAP.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
from omegaconf import DictConfig

from moco_bench.core.errors import ConfigError, DataError
from moco_bench.evaluators.base import EvalContext, EvalOutput
from moco_bench.evaluators.features import check_finite, load_split
from moco_bench.evaluators.transfer.solvers import Linear, Solver


def carve_validation(n: int, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows) as ssl-transfer's loaders split train: ``np.random.seed(seed)``, a shuffle of
    ``range(n)``, the first ``floor(fraction n)`` rows for validation."""
    order = list(range(n))
    np.random.RandomState(seed).shuffle(order)
    cut = int(np.floor(fraction * n))
    return np.asarray(order[cut:], dtype=np.int64), np.asarray(order[:cut], dtype=np.int64)


def costs(wd_log10: Sequence[float], count: int) -> List[float]:
    """``C = 1 / wd`` for ``wd`` over ``logspace(start, stop, count)`` (float32, as ``torch.logspace``), in order."""
    if len(wd_log10) != 2:
        raise ConfigError(f"logreg.wd_log10 is [start, stop] of the weight-decay logspace, got {list(wd_log10)}")
    wd = np.logspace(float(wd_log10[0]), float(wd_log10[1]), int(count)).astype(np.float32)
    return [1.0 / float(w) for w in wd]


def voc11_ap(scores: np.ndarray, positive: np.ndarray) -> float:
    """PASCAL VOC 2007's 11-point AP: the mean over recall thresholds 0, 0.1, .., 1 of the best precision at a
    recall at least that high (ssl-transfer voc_ap, over scikit-learn's precision-recall curve)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(positive.astype(int), scores)
    return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                          for t in np.linspace(0, 1, 11)]))


def score(metric: str, models: List[Linear], x: np.ndarray, y: np.ndarray) -> Tuple[float, np.ndarray | None]:
    """(the metric in %, per-image top-1 hits or None) of ``models`` on ``(x, y)``."""
    if metric == "voc11_map":
        return 100.0 * float(np.mean([voc11_ap(m.scores(x)[:, 0], y[:, c] == 1) for c, m in enumerate(models)])), None
    pred = models[0].predict(x)
    hits = pred == y
    if metric == "top1":
        return 100.0 * float(hits.mean()), hits
    present = np.unique(y)
    return 100.0 * float(np.mean([hits[y == c].mean() for c in present])), hits


def fit_grid(solver: Solver, x: np.ndarray, y: np.ndarray, grid: Sequence[float], num_classes: int,
             multilabel: bool) -> List[List[Linear]]:
    """``[models per cost]``: one multinomial model, or one binary model per class (``y == 1``) for VOC."""
    if not multilabel:
        return [[m] for m in solver.path(x, y, grid, num_classes)]
    per_class = [solver.path(x, (y[:, c] == 1).astype(np.int64), grid, 2) for c in range(y.shape[1])]
    return [list(models) for models in zip(*per_class)]


def choose_cost(solver: Solver, metric: str, train: Tuple[np.ndarray, np.ndarray], val: Tuple[np.ndarray, np.ndarray],
                grid: Sequence[float], num_classes: int) -> Tuple[int, List[float]]:
    """(index of the chosen cost, validation metric per cost): the first cost with the best validation score,
    as the source keeps a cost only when it beats the best so far."""
    multilabel = train[1].ndim == 2
    curve = [score(metric, models, *val)[0] for models in fit_grid(solver, *train, grid, num_classes, multilabel)]
    return int(np.argmax(curve)), curve


def transfer(solver: Solver, metric: str, train, val, test, grid: Sequence[float], num_classes: int) -> Dict:
    """The whole protocol on features: the cost chosen on ``val``, the refit on train + val, the test metric."""
    best, curve = choose_cost(solver, metric, train, val, grid, num_classes)
    both = (np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
    models = fit_grid(solver, *both, [grid[best]], num_classes, train[1].ndim == 2)[0]
    value, hits = score(metric, models, *test)
    return {"test": value, "hits": hits, "C": float(grid[best]), "val_curve": curve, "val_best": curve[best]}


def _rows(split, layer: str, rows=None) -> Tuple[np.ndarray, np.ndarray]:
    feats = np.asarray(split.features[layer], dtype=np.float32)
    return (feats, split.labels) if rows is None else (feats[rows], split.labels[rows])


def transfer_logreg(backbone, cfg: DictConfig, ctx: EvalContext) -> EvalOutput:
    """The metric ``logreg.metric`` on the test split, with the cost chosen on validation (see module doc)."""
    layer, data = cfg.features.layers[0], cfg.data
    with ctx.stage("features"):
        splits = {s: load_split(backbone, cfg, ctx.cache_dir, s, device=ctx.device, workers=ctx.workers,
                                layers=[layer]) for s in dict.fromkeys(
                                    [data.train_split, data.val_split or data.train_split, data.test_split])}
    train_s, test_s = splits[data.train_split], splits[data.test_split]
    for name, s in splits.items():
        if s.classes != train_s.classes:
            raise DataError(f"{data.root}: split {name} has other classes than {data.train_split}")
        check_finite(s.features[layer], s.images, f"{name} split")
    if data.val_split:
        train, val = _rows(train_s, layer), _rows(splits[data.val_split], layer)
        where = f"official split {data.val_split}"
    else:
        keep, held = carve_validation(len(train_s.images), float(cfg.validation.fraction), int(cfg.validation.seed))
        train, val = _rows(train_s, layer, keep), _rows(train_s, layer, held)
        where = f"{cfg.validation.fraction:g} of {data.train_split}, seed {cfg.validation.seed}"
    lr = cfg.logreg
    solver = Solver(str(lr.solver), ctx.device, max_iter=int(lr.max_iter), tol=float(lr.tol),
                    warm_start=bool(lr.warm_start), dtype=str(lr.dtype))
    grid = costs(list(lr.wd_log10), int(lr.wd_count))
    with ctx.stage("logreg"):
        out = transfer(solver, str(lr.metric), train, val, _rows(test_s, layer), grid, len(train_s.classes))
    info = {"dataset": str(data.name), "dataset_root": str(data.root), "layer": layer,
            "split": f"{data.train_split}+val->{data.test_split}", "validation": where, "solver": solver.kind,
            "precision": str(cfg.features.precision), "feature_cache": {s: v.cache for s, v in splits.items()}}
    details = {"C": out["C"], "val_metric": out["val_best"], "val_curve": dict(zip(map(float, grid), out["val_curve"])),
               "images": {"train": len(train[1]), "val": len(val[1]), "test": len(test_s.images)}}
    examples = {}
    if out["hits"] is not None and str(lr.metric) == "top1":
        examples = {"images": test_s.images, "root": str(data.root),
                    "metrics": {"top1": {"kind": "accuracy", "hits": out["hits"]}}}
    return EvalOutput(metrics={str(lr.metric): out["test"]}, details=details, info=info, examples=examples)
