"""The report's intervals held against scipy and direct computations on the same data and seed: the percentile
bootstrap of a single run, the paired bootstrap of a difference, the resampled mAP, the t interval over trials
(sample std, ddof 1), and how the published spreads beside them were computed."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from moco_bench.evaluators.frozen.ap import mean_average_precision
from moco_bench.results import stats
from moco_bench.results.examples import Examples
from moco_bench.results.published import load_published

N, RESAMPLES, SEED = 400, 2000, 7


def _accuracy(p: float, seed: int) -> Examples:
    return Examples("accuracy", N, "same-images", {"hits": np.random.default_rng(seed).random(N) < p})


def _map(seed: int, signal: float = 1.0) -> Examples:
    rng = np.random.default_rng(seed)
    targets = np.where(rng.random((N, 6)) < 0.3, 1, -1).astype(np.int8)
    targets[rng.random((N, 6)) < 0.05] = 0  # difficult: neither positive nor negative
    scores = rng.normal(size=(N, 6)) + signal * targets
    return Examples("map", N, "same-images", {"scores": scores, "targets": targets})


def test_bootstrap_interval_is_scipys_percentile_bootstrap_with_the_same_seed():
    ex = _accuracy(0.7, 1)
    ours = stats.bootstrap_interval(ex, RESAMPLES, SEED, 0.9)
    ref = scipy.stats.bootstrap((100.0 * ex.arrays["hits"],), np.mean, n_resamples=RESAMPLES, method="percentile",
                                confidence_level=0.9, rng=np.random.default_rng(SEED))
    assert (ours.low, ours.high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high),
                                                  abs=1e-12)
    assert ours.value == pytest.approx(100.0 * ex.arrays["hits"].mean())
    assert (ours.n, ours.resamples, ours.method) == (N, RESAMPLES, "bootstrap")


def test_resampled_map_is_the_protocols_map_of_the_resampled_images():
    ex = _map(2)
    fn = stats.statistic(ex)
    scores, targets = ex.arrays["scores"], ex.arrays["targets"]
    classes = [str(c) for c in range(6)]
    assert fn(np.arange(N)) == pytest.approx(100 * mean_average_precision(targets, scores, classes)[0], abs=1e-9)
    idx = np.random.default_rng(3).integers(0, N, (5, N))  # duplicates: the same image drawn several times
    direct = [100 * mean_average_precision(targets[i], scores[i], classes)[0] for i in idx]
    assert fn(idx) == pytest.approx(direct, abs=1e-9)


def test_map_interval_matches_scipy_resampling_the_images_with_the_protocols_map():
    ex = _map(4)
    scores, targets, classes = ex.arrays["scores"], ex.arrays["targets"], [str(c) for c in range(6)]
    ours = stats.bootstrap_interval(ex, 200, SEED)
    ref = scipy.stats.bootstrap(
        (np.arange(N),), lambda i: 100 * mean_average_precision(targets[i], scores[i], classes)[0], n_resamples=200,
        method="percentile", vectorized=False, rng=np.random.default_rng(SEED))
    assert (ours.low, ours.high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high),
                                                  abs=1e-9)


@pytest.mark.parametrize("kind", ["accuracy", "map"])
def test_paired_difference_resamples_the_same_images_for_both(kind):
    a, b = (_accuracy(0.72, 5), _accuracy(0.7, 6)) if kind == "accuracy" else (_map(5, 1.2), _map(5, 1.0))
    ours = stats.paired_difference(a, b, RESAMPLES, SEED)
    fa, fb = stats.statistic(a), stats.statistic(b)
    rng = np.random.default_rng(SEED)  # scipy draws (batch, N) indices per batch from the generator
    idx = np.concatenate([rng.integers(0, N, (stats.BATCH, N)) for _ in range(RESAMPLES // stats.BATCH)])
    diffs = np.concatenate([fa(chunk) - fb(chunk) for chunk in np.split(idx, RESAMPLES // stats.BATCH)])
    assert (ours.low, ours.high) == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])), abs=1e-9)
    assert ours.value == pytest.approx(float(fa(np.arange(N)) - fb(np.arange(N))))
    unpaired = stats.bootstrap_interval(a, RESAMPLES, SEED).high - stats.bootstrap_interval(b, RESAMPLES, SEED).low
    assert ours.high < unpaired  # shared images cancel: narrower than the intervals apart would suggest
    assert ours.text(signed=True) == f"{ours.value:+.2f} [{ours.low:+.2f}, {ours.high:+.2f}]"


def test_paired_difference_refuses_other_test_images():
    other = Examples("accuracy", N, "other-images", _accuracy(0.7, 1).arrays)
    with pytest.raises(ValueError, match="different test images"):
        stats.paired_difference(_accuracy(0.7, 1), other)


def test_trials_give_mean_sample_std_and_t_interval():
    values = [67.7, 67.6, 67.4, 67.6, 67.3]
    iv = stats.trials_interval(values, 0.95)
    assert iv.value == pytest.approx(np.mean(values)) and iv.std == pytest.approx(np.std(values, ddof=1))
    half = scipy.stats.t.ppf(0.975, 4) * np.std(values, ddof=1) / np.sqrt(5)
    assert (iv.low, iv.high) == pytest.approx((np.mean(values) - half, np.mean(values) + half))
    assert stats.trials_interval([67.7]) is None
    paired = stats.paired_trials([30.0, 31.0, 33.0], [29.0, 29.5, 30.0])
    d = np.array([1.0, 1.5, 3.0])
    half = scipy.stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert (paired.value, paired.low, paired.high) == pytest.approx((d.mean(), d.mean() - half, d.mean() + half))


def test_published_moco_spreads_are_population_stds_of_their_runs():
    """facebookresearch/moco's README: five runs each, "mean±std": MoCo v1 {60.6, 60.6, 60.7, 60.9, 61.1} printed
    60.8±0.2, MoCo v2 {67.7, 67.6, 67.4, 67.6, 67.3} printed 67.5±0.1. v2's 0.1 is the population std (0.147;
    ddof 1 gives 0.164, printed 0.2), so the published spread is numpy's default np.std, as fair-ssb's low-shot
    aggregation (np.std over the samples) is too; the report's t intervals use the sample std (ddof 1)."""
    pub = load_published()
    runs = {"MoCo v1": [60.6, 60.6, 60.7, 60.9, 61.1], "MoCo v2": [67.7, 67.6, 67.4, 67.6, 67.3]}
    for method, values in runs.items():
        row = pub[(pub["method"] == method) & (pub["benchmark"] == "imagenet_linear") & (pub["epochs"] == "200")
                  & (pub["source"] == "moco-README")]
        assert row["spread"].tolist() == [round(float(np.std(values)), 1)]
        assert row["value"].tolist() == [round(float(np.mean(values)), 1)]
    assert round(float(np.std(runs["MoCo v2"], ddof=1)), 1) == 0.2  # what ddof 1 would have printed
