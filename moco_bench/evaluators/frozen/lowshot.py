"""Low-shot VOC07 SVM on frozen features (Goyal et al. 2019; fair_self_supervision_benchmark's low-shot tools,
as run by mmselfsup and vissl): for each k and seeded sample, per-class SVMs on k positives and (C - 1) * k
negatives, scored on the full test set. The SVM itself is :mod:`moco_bench.evaluators.frozen.svm`'s.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from joblib import delayed
from omegaconf import DictConfig

from moco_bench.core.errors import ConfigError, DataError
from moco_bench.evaluators.base import EvalContext, EvalOutput
from moco_bench.evaluators.frozen.ap import average_precision
from moco_bench.evaluators.frozen.svm import (
    SVMParams,
    check_inputs,
    check_positives,
    costs_of,
    cross_validated_ap,
    fit_binary,
    fit_path,
    info,
    log_solves,
    n_jobs,
    normalized_pair,
    parallel,
    solve_counts,
    splits,
    sum_counts,
)


def sample_lowshot(t: np.ndarray, k: int, negatives: int, rng: np.random.Generator, name: str) -> np.ndarray:
    """Sorted row indices of ``k`` positives and ``negatives`` negatives of one class (difficult never drawn),
    as the anchors' create_voc_low_shot_samples does per class."""
    pos, neg = np.flatnonzero(t > 0), np.flatnonzero(t < 0)
    if k > len(pos) or negatives > len(neg):
        raise DataError(f"low-shot k={k}: class {name!r} has {len(pos)} positive and {len(neg)} negative training "
                        f"images; the sample needs {k} and {negatives} (k larger than the training set)")
    return np.sort(np.concatenate([rng.choice(pos, k, replace=False), rng.choice(neg, negatives, replace=False)]))


def _lowshot_task(X, t, Xtest, ttest, rows, costs, p: SVMParams, mode: str, folds: int, fixed: int | None,
                  name: str) -> dict:
    """One (k, sample, class): legacy -> test AP for every cost; cv -> chosen cost and its test AP."""
    Xc, y, stats = X[rows], np.where(t[rows] > 0, 1, -1).astype(np.int32), {}

    def test_ap(w, b):
        return 100.0 * average_precision(ttest, Xtest @ w + b, what=f"test class {name!r}")

    if mode == "test":
        out = {"test_ap": [test_ap(w, b) for w, b in fit_path(Xc, y, costs, p, stats)]}
    elif fixed is not None:
        out = {"cost_index": fixed, "ap": test_ap(*fit_binary(Xc, y, costs[fixed], p, costs, stats))}
    else:
        cv = cross_validated_ap(Xc, y, costs, p, folds=folds, stats=stats)
        best = int(np.argmax(cv))
        out = {"cost_index": best, "cv_ap": cv.tolist(),
               "ap": test_ap(*fit_binary(Xc, y, costs[best], p, costs, stats))}
    return {**out, **solve_counts(stats)}


def _samples(train_T, classes: Sequence[str], ks: Sequence[int], seeds: Sequence[int], n_neg: int) -> dict:
    """``(k, seed index, class) -> rows``: one seeded draw per (k, seed), class by class."""
    samples = {}
    for k in ks:
        for s, seed in enumerate(seeds):
            rng = np.random.default_rng([int(seed), int(k)])
            for c, name in enumerate(classes):
                samples[k, s, c] = sample_lowshot(train_T[:, c], k, n_neg * k, rng, name)
    return samples


def _summary(results: dict, k: int, selection: str, costs: Sequence[float], classes: Sequence[str], n_seeds: int,
             cv_ks: Sequence[int]) -> dict:
    """Per-k ``mean/min/max/std`` of the sample mAPs (percent), the per-sample mAPs and the chosen costs."""
    if selection == "test":
        # (samples, costs) of mean-over-classes test AP; the cost maximizing the mean over samples
        grid = np.array([[np.mean([results[k, s, c]["test_ap"][i] for c in range(len(classes))])
                          for i in range(len(costs))] for s in range(n_seeds)])
        best = int(np.argmax(grid.mean(axis=0)))
        maps = grid[:, best]
        chosen = {"cost": float(costs[best]), "test_map_per_cost": grid.mean(axis=0).tolist()}
    else:
        maps = np.array([np.mean([results[k, s, c]["ap"] for c in range(len(classes))]) for s in range(n_seeds)])
        chosen = {"cost": [{name: float(costs[results[k, s, c]["cost_index"]]) for c, name in enumerate(classes)}
                           for s in range(n_seeds)],
                  "borrowed_from_k": cv_ks[0] if k < 2 else None}
    return {"mean": float(maps.mean()), "min": float(maps.min()), "max": float(maps.max()), "std": float(maps.std()),
            "per_seed": maps.tolist(), **chosen}


def lowshot_on_features(train_X, train_T, test_X, test_T, classes: Sequence[str], costs: Sequence[float],
                        p: SVMParams, *, ks: Sequence[int], seeds: Sequence[int], negatives_per_positive: int | None,
                        selection: str, n_jobs: int = 1, images=None) -> dict:
    """Low-shot VOC07 SVM: for each k and seeded sample, per-class SVMs on k positives + negatives.

    ``selection``: ``cv`` picks each (k, sample, class) cost by stratified cross-validation on the sample
    itself with ``min(cv_folds, k)`` folds; where k < 2 allows no fold with a positive, the class takes the
    cost cross-validation chose for it at the smallest cross-validatable k of the same seed (never the test
    set). ``test`` is the anchors' legacy rule: one cost per k, the one with the best mean TEST mAP.
    Returns ``{"k": {k: summary}, "selection", "max_iter", "unstable", "solves"}`` (summaries as :func:`_summary`;
    the counts as :func:`~moco_bench.evaluators.frozen.svm.fit_path`'s).
    """
    check_inputs(train_X, test_X, images)
    check_positives(test_T, classes, "test split")
    cv_ks = sorted(k for k in ks if k >= 2)
    if selection == "cv" and not cv_ks and any(k < 2 for k in ks):
        raise ConfigError("lowshot: k=1 borrows its cost from a cross-validated k >= 2; add one to lowshot.k")
    n_neg = negatives_per_positive if negatives_per_positive is not None else len(classes) - 1
    samples = _samples(train_T, classes, ks, seeds, n_neg)

    def run(keys, fixed=None):
        tasks = [delayed(_lowshot_task)(X, train_T[:, c], Xt, test_T[:, c], samples[k, s, c], list(costs), p,
                                        selection, min(p.cv_folds, k), None if fixed is None else fixed[s, c],
                                        classes[c]) for k, s, c in keys]
        return dict(zip(keys, parallel(tasks, n_jobs, "low-shot svm")))

    with normalized_pair(train_X, test_X, p, n_jobs) as (X, Xt):
        if selection == "cv":
            results = run([key for key in samples if key[0] >= 2])
            if any(k < 2 for k in ks):
                donor = {(s, c): results[cv_ks[0], s, c]["cost_index"] for s in range(len(seeds))
                         for c in range(len(classes))}
                results.update(run([key for key in samples if key[0] < 2], fixed=donor))
        else:
            results = run(list(samples))
    return {"k": {k: _summary(results, k, selection, costs, classes, len(seeds), cv_ks) for k in ks},
            "selection": selection, **sum_counts(results.values())}


def voc07_lowshot_svm(backbone, cfg: DictConfig, ctx: EvalContext) -> EvalOutput:
    """Low-shot VOC07 SVM: ``mAP@k<k>`` (mean over samples) and ``_min``/``_max``/``_std`` per k, first layer."""
    p, costs = SVMParams.from_config(cfg.svm), costs_of(cfg)
    layer = cfg.features.layers[0]
    train, test = splits(backbone, cfg, ctx)
    lcfg = cfg.lowshot
    with ctx.stage(f"lowshot_{layer}"):
        res = lowshot_on_features(train.features[layer], train.labels, test.features[layer], test.labels,
                                  train.classes, costs, p, ks=[int(k) for k in lcfg.k],
                                  seeds=[int(s) for s in lcfg.seeds],
                                  negatives_per_positive=lcfg.negatives_per_positive,
                                  selection=str(lcfg.cost_selection), n_jobs=n_jobs(cfg, ctx),
                                  images=(train.images, test.images))
    metrics, per_seed = {}, {}
    for k, r in res["k"].items():
        metrics[f"mAP@k{k}"] = r["mean"]
        for stat in ("min", "max", "std"):
            metrics[f"mAP@k{k}_{stat}"] = r[stat]
        per_seed[f"mAP@k{k}"] = r["per_seed"]
    # The published numbers chose the cost on test mAP; cross-validated costs are a different rule, so such
    # results are labelled (and not comparable: the config's comparability.requires).
    legacy = res["selection"] == "test"
    selection = ("cost chosen on test mAP (legacy, as the anchors)" if legacy
                 else "cost chosen by cross-validation on each sample")
    variant = "; ".join(v for v in (str(cfg.get("variant", "") or ""), selection) if v)
    record = info(cfg, [layer], train, test, backend=p.backend, seeds=[int(s) for s in lcfg.seeds],
                 cost_selection=res["selection"], variant=variant)
    details = {"k": res["k"], "costs": costs, **log_solves(str(cfg.name), res)}
    return EvalOutput(metrics=metrics, per_seed=per_seed, details=details, info=record)
