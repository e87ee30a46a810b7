"""How sure a number is: percentile bootstrap intervals over test images, paired differences, intervals over trials.

- A single run on a fixed test set (kNN, linear top-1, the VOC07 SVM mAP): ``scipy.stats.bootstrap`` resamples the
  test images (``method="percentile"``, a stated number of resamples, a seeded ``numpy`` generator) from the
  per-example outputs kept beside the record (:mod:`moco_bench.results.examples`).
- Two checkpoints on the same test images: the same resamples of both (a paired bootstrap) give the interval of
  A - B, so shared difficulty of images cancels.
- Several trials (detection seeds, low-shot samples): the mean, the sample standard deviation (``ddof=1``) and the
  Student t interval ``scipy.stats.t.interval`` with the standard error ``scipy.stats.sem``.

A resampled mAP is computed from how often each image was drawn (the AP of the resample with duplicates kept
together), so no resample is sorted again; :func:`map_of_counts` with all counts 1 is the protocol's mAP.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import scipy.stats

from moco_bench.results.examples import Examples

BATCH = 50  # resamples evaluated at once (bounded memory: a batch of ImageNet hits is 50 x 50,000 values)
Statistic = Callable[[np.ndarray], np.ndarray]  # (..., N) rows of test-image indices -> (...) values


@dataclass(frozen=True)
class Interval:
    """``value`` with its interval ``[low, high]`` at ``confidence``; ``method`` says how it was obtained."""

    value: float
    low: float
    high: float
    confidence: float
    method: str  # "bootstrap" (over test images) or "t" (over trials)
    n: int  # test images or trials
    resamples: int = 0
    std: Optional[float] = None  # over trials: the sample std (ddof 1)

    def bracket(self, digits: int = 2, signed: bool = False) -> str:
        """``[71.10, 73.60]`` (``signed``: ``[-0.10, +0.90]``)."""
        fmt = f"{'+' if signed else ''}.{digits}f"
        return f"[{self.low:{fmt}}, {self.high:{fmt}}]"

    def text(self, digits: int = 2, signed: bool = False) -> str:
        """``72.40 [71.10, 73.60]`` (``signed``: ``+0.40 [-0.10, +0.90]``)."""
        return f"{self.value:{'+' if signed else ''}.{digits}f} {self.bracket(digits, signed)}"

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def counts_of(idx: np.ndarray, n: int) -> np.ndarray:
    """``(rows, N)`` draw counts of each image from ``(rows, N)`` (or ``(N,)``) resampled indices."""
    idx = np.atleast_2d(idx)
    offset = (np.arange(len(idx)) * n)[:, None]
    return np.bincount((idx + offset).ravel(), minlength=len(idx) * n).reshape(len(idx), n).astype(np.float64)


def map_of_counts(scores: np.ndarray, targets: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean over classes of the all-points AP (percent) for each row of image ``counts`` (the VOC07 protocol's AP:
    moco_bench/evaluators/frozen/ap.py; targets 0, difficult, count for nothing). An image drawn c times is c
    tied examples: each copy is a point of the curve and the precision envelope is taken over them together. A
    class without a positive in a resample has no AP and is left out of that resample's mean."""
    aps = np.full((len(counts), scores.shape[1]), np.nan)
    for c in range(scores.shape[1]):
        order = np.argsort(scores[:, c], kind="stable")[::-1]
        w = counts[:, order]
        pos, neg = w * (targets[order, c] > 0), w * (targets[order, c] < 0)
        tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(pos > 0, tp / (tp + fp), 0.0)
            envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
            aps[:, c] = (pos * envelope).sum(axis=1) / tp[:, -1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any positive: NaN, said by the caller
        return 100.0 * np.nanmean(aps, axis=1)


def statistic(examples: Examples) -> Statistic:
    """The metric of ``examples`` as a function of resampled test-image indices (vectorized over rows)."""
    if examples.kind == "accuracy":
        hits = examples.arrays["hits"]
        return lambda idx: 100.0 * hits[idx].mean(axis=-1)
    scores, targets = examples.arrays["scores"], examples.arrays["targets"]

    def mean_ap(idx: np.ndarray) -> np.ndarray:
        out = map_of_counts(scores, targets, counts_of(idx, examples.n))
        return out if np.ndim(idx) > 1 else out[0]
    return mean_ap


def _bootstrap(fn: Statistic, n: int, resamples: int, seed: int, confidence: float) -> tuple:
    res = scipy.stats.bootstrap((np.arange(n),), lambda idx, axis=-1: fn(idx), n_resamples=resamples, batch=BATCH,
                                vectorized=True, axis=-1, confidence_level=confidence, method="percentile",
                                rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def bootstrap_interval(examples: Examples, resamples: int = 1000, seed: int = 0,
                       confidence: float = 0.95) -> Interval:
    """The metric and its percentile bootstrap interval over the test images."""
    fn = statistic(examples)
    low, high = _bootstrap(fn, examples.n, resamples, seed, confidence)
    return Interval(float(fn(np.arange(examples.n))), low, high, confidence, "bootstrap", examples.n, resamples)


def paired_difference(a: Examples, b: Examples, resamples: int = 1000, seed: int = 0,
                      confidence: float = 0.95) -> Interval:
    """A - B and its interval from the same bootstrap resamples of the test images for both."""
    if (a.n, a.images_sha256) != (b.n, b.images_sha256):
        raise ValueError("the two results were measured on different test images")
    fa, fb = statistic(a), statistic(b)

    def diff(idx: np.ndarray) -> np.ndarray:
        return fa(idx) - fb(idx)
    low, high = _bootstrap(diff, a.n, resamples, seed, confidence)
    return Interval(float(diff(np.arange(a.n))), low, high, confidence, "bootstrap", a.n, resamples)


def trials_interval(values: Sequence[float], confidence: float = 0.95) -> Optional[Interval]:
    """Mean, sample std (ddof 1) and the t interval of the mean over trials; None for fewer than two."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return None
    mean, sem = float(v.mean()), float(scipy.stats.sem(v))  # sem: std with ddof 1, over sqrt(n)
    low, high = scipy.stats.t.interval(confidence, len(v) - 1, loc=mean, scale=sem) if sem > 0 else (mean, mean)
    return Interval(mean, float(low), float(high), confidence, "t", len(v), std=float(np.std(v, ddof=1)))


def paired_trials(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Optional[Interval]:
    """Mean of A - B over trials run with the same seeds (the same low-shot samples) and its paired t interval
    (``scipy.stats.ttest_rel``); None for fewer than two pairs."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(a) != len(b):
        return None
    d = a - b
    if np.ptp(d) == 0:
        return Interval(float(d.mean()), float(d[0]), float(d[0]), confidence, "t", len(d), std=0.0)
    ci = scipy.stats.ttest_rel(a, b).confidence_interval(confidence_level=confidence)
    return Interval(float(d.mean()), float(ci.low), float(ci.high), confidence, "t", len(d),
                    std=float(np.std(d, ddof=1)))


def describe(interval: Interval) -> str:
    """How an interval was obtained, for a tooltip or a footnote."""
    pct = f"{100 * interval.confidence:g}%"
    if interval.method == "t":
        return f"{pct} t interval of the mean over {interval.n} trials; sample std {interval.std:.2f} (ddof 1)"
    return f"{pct} percentile bootstrap over {interval.n} test images, {interval.resamples} resamples"
