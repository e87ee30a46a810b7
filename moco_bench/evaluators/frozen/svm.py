"""VOC07 SVM and low-shot SVM on frozen features (fair_self_supervision_benchmark tools/svm, as run by
mmselfsup and vissl).

One binary linear SVM per class (squared hinge, L2, positives weighted 2:1) on L2-normalized features; its
cost is chosen by 3-fold cross-validated average precision on trainval, refit on all of trainval and scored
on test with the envelope AP of :mod:`moco_bench.evaluators.frozen.ap`.

The solver is cyanure by default. Its objective is ``(1/n) sum 0.5 max(0, 1 - y f)^2 + lambda/2 ||w||^2``,
so ``lambda = 1 / (2 C n)`` gives LinearSVC(C)'s minimizer; cyanure has no sample weights, so a class weight
of 2 duplicates each positive row (n counts the copies), and the intercept is a penalized constant feature as
in liblinear. ``backend: sklearn`` runs the anchors' LinearSVC itself, for checking.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Sequence, Tuple

import numpy as np
from joblib import Parallel, delayed
from omegaconf import DictConfig
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import average_precision_score
from sklearn.model_selection import StratifiedKFold

from moco_bench.core import native_output
from moco_bench.core.config import source_of
from moco_bench.core.errors import ConfigError, DataError
from moco_bench.core.progress import bar
from moco_bench.evaluators.base import EvalContext, EvalOutput
from moco_bench.evaluators.features import load_pair, split_info
from moco_bench.evaluators.frozen.ap import average_precision

log = logging.getLogger(__name__)
CYANURE_UNSTABLE = "Your problem is prone to numerical instability"  # the start of cyanure's C++ warning
SOLVE_COUNTS = ("max_iter", "unstable", "solves")


@dataclass(frozen=True)
class SVMParams:
    """One binary SVM's settings (the config's ``svm`` block, less the cost grid); no defaults: the numbers
    are the protocol's, in evaluate/voc07_svm.yaml."""

    backend: str
    positive_weight: float
    tol: float
    max_iter: int
    cv_folds: int
    normalize_eps: float
    dtype: str
    difficult_in_train: str
    cyanure_tol: float
    cyanure_solver: str
    cyanure_seed_tol: float
    intercept_scaling: float

    @classmethod
    def from_config(cls, svm: Mapping) -> "SVMParams":
        weights = svm["class_weight"]
        if float(weights["negative"]) != 1.0:
            raise ConfigError("svm.class_weight.negative must be 1 (the positive weight is relative to it)")
        p = cls(backend=svm["backend"], positive_weight=float(weights["positive"]), tol=float(svm["tol"]),
                max_iter=int(svm["max_iter"]), cv_folds=int(svm["cv_folds"]),
                normalize_eps=float(svm["normalize_eps"]), dtype=str(svm["dtype"]),
                difficult_in_train=str(svm["difficult_in_train"]), cyanure_tol=float(svm["cyanure_tol"]),
                cyanure_solver=str(svm["cyanure_solver"]), cyanure_seed_tol=float(svm["cyanure_seed_tol"]),
                intercept_scaling=float(svm["intercept_scaling"]))
        if p.backend == "cyanure" and p.positive_weight != int(p.positive_weight):
            raise ConfigError("svm.class_weight.positive must be a whole number with cyanure (rows are duplicated)")
        return p


def l2_normalize(x: np.ndarray, eps: float, dtype: str = "float64") -> np.ndarray:
    """``x / (||x|| + eps)`` row-wise, the anchors' normalization (a new array of ``dtype``)."""
    x = np.asarray(x, dtype=dtype)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + eps)


def fit_path(X: np.ndarray, y: np.ndarray, costs: Sequence[float], p: SVMParams,
             stats: Dict[str, int] | None = None, seeds_only: bool = False) -> List[Tuple[np.ndarray, float]]:
    """``(w, b)`` of LinearSVC(C, class_weight {1: w, -1: 1}) on labels ``y`` in {1, -1}, for each cost.

    As in liblinear, the intercept is the weight of a constant feature (``intercept_scaling``), penalized with
    the others, so both backends minimize the same objective (cyanure's own intercept would be unpenalized).
    cyanure solves the costs in increasing order, each warm-started from the previous solution, with a
    MISO-type solver: at large costs (tiny lambda) on real, correlated features, cyanure's ``auto`` choice
    (a quasi-Newton ISTA) and cold starts can stop at ``max_iter`` far from the optimum, where warm-started
    qning-miso converges in tens of passes. With ``seeds_only`` every cost but the largest only seeds the next
    solve, at the looser ``cyanure_seed_tol``; the largest is solved at ``cyanure_tol``. ``stats["max_iter"]``
    counts solves that hit ``max_iter``, ``stats["solves"]`` all solves and ``stats["unstable"]`` cyanure's "prone
    to numerical instability" warnings (written by its C++ code to stderr when the duality gap stops moving or
    reaches 0 at float round-off; the solve stops there), which are counted here instead of printed.
    """
    stats = stats if stats is not None else {}
    if p.backend == "sklearn":
        from sklearn.svm import LinearSVC

        out = []
        for cost in costs:
            clf = LinearSVC(C=cost, class_weight={1: p.positive_weight, -1: 1.0}, penalty="l2",
                            loss="squared_hinge", dual=True, tol=p.tol, max_iter=p.max_iter,
                            intercept_scaling=p.intercept_scaling, random_state=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(X, y)
            stats["max_iter"] = stats.get("max_iter", 0) + int(clf.n_iter_ >= p.max_iter)
            out.append((clf.coef_.ravel().astype(np.float64), float(clf.intercept_[0])))
        stats["solves"] = stats.get("solves", 0) + len(costs)
        return out
    from cyanure.estimators import Classifier

    rows = np.concatenate([np.arange(len(y))] + [np.flatnonzero(y > 0)] * (int(p.positive_weight) - 1))
    Xd = np.empty((len(rows), X.shape[1] + 1), dtype=p.dtype)
    Xd[:, :-1] = X[rows]
    Xd[:, -1] = p.intercept_scaling
    yd = y[rows].astype(p.dtype)
    clf = Classifier(loss="sqhinge", penalty="l2", fit_intercept=False, tol=p.cyanure_tol, max_iter=p.max_iter,
                     solver=p.cyanure_solver, verbose=False, n_threads=1, safe=False, warm_start=True)
    out: List = [None] * len(costs)
    order = np.argsort(costs, kind="stable")
    with native_output.captured() as lines:
        for i in order:
            seed = seeds_only and i != order[-1]
            clf.set_params(lambda_1=1.0 / (2.0 * costs[i] * len(yd)), tol=p.cyanure_seed_tol if seed else p.cyanure_tol)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(Xd, yd)
            stats["max_iter"] = stats.get("max_iter", 0) + int(np.max(clf.n_iter_) >= p.max_iter)
            coef = np.asarray(clf.coef_, dtype=np.float64).ravel()
            out[i] = (coef[:-1].copy(), float(coef[-1] * p.intercept_scaling))
    stats["unstable"] = stats.get("unstable", 0) + native_output.forward_except(lines, CYANURE_UNSTABLE)
    stats["solves"] = stats.get("solves", 0) + len(costs)
    return out


def solve_counts(stats: Dict[str, int]) -> Dict[str, int]:
    """What one task's solves report: ``max_iter`` (solves stopped at max_iter), ``unstable``, ``solves``."""
    return {k: int(stats.get(k, 0)) for k in SOLVE_COUNTS}


def sum_counts(results) -> Dict[str, int]:
    return {k: int(sum(r[k] for r in results)) for k in SOLVE_COUNTS}


def log_solves(name: str, counts: Mapping[str, int]) -> Dict[str, int]:
    """One line per evaluation for cyanure's instability warnings (counted, not printed); returns the details."""
    if counts["unstable"]:
        log.info("%s: cyanure said \"%s\" %d times over %d SVM solves (the duality gap stalled or reached 0 at "
                 "float round-off, where it stops)", name, CYANURE_UNSTABLE, counts["unstable"], counts["solves"])
    return {"solves": counts["solves"], "solves_at_max_iter": counts["max_iter"],
            "numerical_instability_warnings": counts["unstable"]}


def fit_binary(X: np.ndarray, y: np.ndarray, cost: float, p: SVMParams, costs: Sequence[float] = (),
               stats: Dict[str, int] | None = None) -> Tuple:
    """``(w, b)`` at ``cost``; with cyanure the solve walks up the smaller ``costs`` first (warm starts)."""
    path = sorted({float(c) for c in costs if c < cost}) + [cost] if p.backend == "cyanure" else [cost]
    return fit_path(X, y, path, p, stats, seeds_only=True)[-1]


def cross_validated_ap(X: np.ndarray, y: np.ndarray, costs: Sequence[float], p: SVMParams,
                       folds: int | None = None, stats: Dict[str, int] | None = None) -> np.ndarray:
    """Mean AP over stratified folds (unshuffled, as sklearn's ``cross_val_score(cv=3)``) for each cost.

    The fold score is scikit-learn's average_precision_score, the anchors' ``scoring='average_precision'``.
    """
    folds = folds or p.cv_folds
    ap = np.zeros((len(costs), folds))
    for f, (tr, va) in enumerate(StratifiedKFold(n_splits=folds).split(X, y)):
        Xva = X[va]
        for i, (w, b) in enumerate(fit_path(X[tr], y[tr], costs, p, stats)):
            ap[i, f] = average_precision_score(y[va] > 0, Xva @ w + b)
    return ap.mean(axis=1)


def _train_labels(t: np.ndarray, p: SVMParams) -> Tuple[np.ndarray, np.ndarray]:
    """Rows used for training and their {1, -1} labels from VOC's 1/-1/0. The anchors' trainval targets keep
    difficult images as negatives (their 0 is 'absent' and VOC's 0 becomes -1); ``ignore`` drops them."""
    rows = np.flatnonzero(t != 0) if p.difficult_in_train == "ignore" else np.arange(len(t))
    return rows, np.where(t[rows] > 0, 1, -1).astype(np.int32)


def _one_class(X, t, Xtest, ttest, costs, p: SVMParams, name: str) -> dict:
    rows, y = _train_labels(t, p)
    n_pos = int((y > 0).sum())
    if n_pos < p.cv_folds:
        raise DataError(f"class {name!r}: {n_pos} positive training image(s); {p.cv_folds}-fold "
                        "cross-validation needs at least one per fold")
    Xc, stats = X[rows], {}
    cv = cross_validated_ap(Xc, y, costs, p, stats=stats)
    best = int(np.argmax(cv))  # first best, in config order, as np.argmax in the anchors
    w, b = fit_binary(Xc, y, costs[best], p, costs, stats)
    scores = Xtest @ w + b
    ap = average_precision(ttest, scores, what=f"test class {name!r}")
    return {"cost": float(costs[best]), "cv_ap": cv.tolist(), "ap": ap, "scores": scores,
            **solve_counts(stats)}


def parallel(tasks: list, n_jobs: int, desc: str) -> list:
    """Run joblib ``delayed`` tasks over ``n_jobs`` processes (cyanure holds the GIL), in order, with progress."""
    if n_jobs == 1:
        return [fn(*args, **kw) for fn, args, kw in bar(tasks, desc=desc, leave=False)]
    runner = Parallel(n_jobs=n_jobs, backend="loky", return_as="generator")
    return list(bar(runner(tasks), total=len(tasks), desc=desc, leave=False))


@contextlib.contextmanager
def normalized_pair(train_X, test_X, p: SVMParams, n_jobs: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """L2-normalized train and test features; for several processes, as memory maps in a temporary folder,
    so the workers share one copy instead of receiving one each."""
    X, Xt = l2_normalize(train_X, p.normalize_eps, p.dtype), l2_normalize(test_X, p.normalize_eps, p.dtype)
    if n_jobs == 1:
        yield X, Xt
        return
    with tempfile.TemporaryDirectory(prefix="moco-bench-svm-") as tmp:
        np.save(Path(tmp) / "train.npy", X)
        np.save(Path(tmp) / "test.npy", Xt)
        del X, Xt
        yield np.load(Path(tmp) / "train.npy", mmap_mode="r"), np.load(Path(tmp) / "test.npy", mmap_mode="r")


def check_inputs(train_X, test_X, images) -> None:
    """NaN/Inf features are an error that names the images (or rows, for bare arrays)."""
    from moco_bench.evaluators.features import check_finite

    images = images or ([f"row {i}" for i in range(len(train_X))], [f"row {i}" for i in range(len(test_X))])
    check_finite(train_X, images[0], "train split")
    check_finite(test_X, images[1], "test split")


def check_positives(targets: np.ndarray, classes: Sequence[str], split: str) -> None:
    empty = [name for c, name in enumerate(classes) if not (targets[:, c] > 0).any()]
    if empty:
        raise DataError(f"{split}: no positive example of class(es) {', '.join(empty)}; AP is undefined")


def voc07_svm_on_features(train_X: np.ndarray, train_T: np.ndarray, test_X: np.ndarray, test_T: np.ndarray,
                          classes: Sequence[str], costs: Sequence[float], p: SVMParams, n_jobs: int = 1,
                          images: Tuple[Sequence[str], Sequence[str]] | None = None) -> dict:
    """The full VOC07 SVM protocol on given features: ``{mAP, ap, cost, cv_ap, max_iter, scores}`` (AP in percent;
    ``scores``: the ``(N, C)`` test scores, the per-example outputs the report resamples).

    ``images`` (train, test image names) lets a NaN/Inf error name the images instead of row numbers.
    """
    check_inputs(train_X, test_X, images)
    check_positives(train_T, classes, "train split")
    check_positives(test_T, classes, "test split")
    with normalized_pair(train_X, test_X, p, n_jobs) as (X, Xt):
        tasks = [delayed(_one_class)(X, train_T[:, c], Xt, test_T[:, c], list(costs), p, name)
                 for c, name in enumerate(classes)]
        out = parallel(tasks, n_jobs, "svm classes")
    aps = [100.0 * o["ap"] for o in out]
    return {"mAP": float(np.mean(aps)), "ap": dict(zip(classes, aps)),
            "cost": {name: o["cost"] for name, o in zip(classes, out)},
            "cv_ap": {name: o["cv_ap"] for name, o in zip(classes, out)}, **sum_counts(out),
            "scores": np.stack([o["scores"] for o in out], axis=1)}


# --- evaluators -----------------------------------------------------------------------------------------------

def costs_of(cfg: DictConfig) -> List[float]:
    costs = [float(c) for c in cfg.svm.costs]
    if not costs or min(costs) <= 0:
        raise ConfigError(f"{source_of(cfg)}: svm.costs must be a non-empty list of positive numbers")
    return costs


def splits(backbone, cfg: DictConfig, ctx: EvalContext):
    """Both splits' features; a single-label reader's labels become one-vs-rest targets (1 / -1 per class), so
    the SVM protocols run on every classification reader, not only on VOC's multi-label files."""
    train, test = load_pair(backbone, cfg, ctx)
    for split in (train, test):
        if split.labels.ndim == 1:
            split.labels = np.where(np.arange(len(split.classes)) == split.labels[:, None], 1.0, -1.0).astype(
                np.float32)
    return train, test


def info(cfg: DictConfig, layers, train, test, **extra) -> Dict:
    return {**split_info(cfg, train, test, layers), **extra}


def n_jobs(cfg: DictConfig, ctx: EvalContext) -> int:
    return int(cfg.svm.get("n_jobs") or ctx.workers or 1)


def voc07_svm(backbone, cfg: DictConfig, ctx: EvalContext) -> EvalOutput:
    """VOC07 SVM: metrics ``mAP`` (first layer of ``features.layers``) and ``<layer>_mAP`` for every layer."""
    p, costs, layers = SVMParams.from_config(cfg.svm), costs_of(cfg), list(cfg.features.layers)
    train, test = splits(backbone, cfg, ctx)
    metrics, details, counts, scores = {}, {}, [], {}
    for layer in layers:
        with ctx.stage(f"svm_{layer}"):
            res = voc07_svm_on_features(train.features[layer], train.labels, test.features[layer], test.labels,
                                        train.classes, costs, p, n_jobs=n_jobs(cfg, ctx),
                                        images=(train.images, test.images))
        metrics[f"{layer}_mAP"] = res["mAP"]
        details[layer] = {"per_class_ap": res["ap"], "chosen_cost": res["cost"], "cv_ap": res["cv_ap"],
                          "solves_at_max_iter": res["max_iter"], "numerical_instability_warnings": res["unstable"]}
        counts.append(res)
        scores[f"{layer}_mAP"] = res["scores"]
    details["solves"] = log_solves(str(cfg.name), sum_counts(counts))
    metrics["mAP"] = metrics[f"{layers[0]}_mAP"]
    if len(layers) == 1:
        del metrics[f"{layers[0]}_mAP"]
    details["costs"] = costs
    scores["mAP"] = scores[f"{layers[0]}_mAP"]
    examples = {"images": test.images, "root": str(cfg.data.root), "metrics": {
        m: {"kind": "map", "scores": scores[m], "targets": test.labels} for m in metrics}}
    return EvalOutput(metrics=metrics, details=details, examples=examples,
                      info=info(cfg, layers, train, test, backend=p.backend, difficult_in_train=p.difficult_in_train))
