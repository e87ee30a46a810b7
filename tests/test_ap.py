"""The VOC07 classification AP: hand-computed cases, ties, difficult examples, no positives."""

import numpy as np
import pytest

from moco_bench.core.errors import DataError
from moco_bench.evaluators.frozen.ap import average_precision, mean_average_precision


def _anchors_ap(labels, scores):
    """The anchors' computation (sorted PR points, precision envelope, sum over recall steps), for scores
    without ties, written out point by point."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    tp = fp = 0
    points = []
    for i in order:
        tp, fp = tp + (labels[i] > 0), fp + (labels[i] <= 0)
        points.append((tp / sum(1 for v in labels if v > 0), tp / (tp + fp)))
    ap, prev_recall = 0.0, 0.0
    for j, (recall, _) in enumerate(points):
        ap += (recall - prev_recall) * max(p for _, p in points[j:])
        prev_recall = recall
    return ap


def test_hand_computed_without_ties():
    # ranks: P+ (P=1, R=.5), N, P+ (P=2/3, R=1), N  ->  .5 * 1 + .5 * 2/3
    assert average_precision(np.array([1, -1, 1, -1]), np.array([0.9, 0.8, 0.7, 0.1])) == pytest.approx(5 / 6)
    # a negative first: P=(0, .5, 2/3) at R=(0, .5, 1); the envelope lifts .5 to 2/3  ->  2/3
    assert average_precision(np.array([-1, 1, 1]), np.array([0.9, 0.8, 0.7])) == pytest.approx(2 / 3)
    assert average_precision(np.array([1, 1, -1]), np.array([3.0, 2.0, 1.0])) == 1.0


def _detectron2_ap(labels, scores):
    """detectron2's ``voc_ap(use_07_metric=False)`` on one point per example, in fair-ssb's sort order
    (``np.argsort(scores)[::-1]``), difficult examples left out as fair-ssb's test_svm leaves them out."""
    voc_ap = pytest.importorskip("detectron2.evaluation.pascal_voc_evaluation").voc_ap
    keep = labels != 0
    labels, scores = labels[keep], np.asarray(scores, dtype=np.float64)[keep]
    order = np.argsort(scores)[::-1]
    tp = np.cumsum(labels[order] > 0).astype(np.float64)
    fp = np.cumsum(labels[order] < 0).astype(np.float64)
    return voc_ap(tp / (labels > 0).sum(), tp / np.maximum(tp + fp, np.finfo(np.float64).eps), use_07_metric=False)


@pytest.mark.parametrize("ties", [False, True])
def test_identical_to_detectron2_voc_ap_with_and_without_ties(ties):
    rng = np.random.default_rng(1)
    for _ in range(50):
        labels = rng.choice([-1, 1, 0], size=40, p=[0.6, 0.3, 0.1])
        labels[0] = 1
        scores = rng.standard_normal(40) + 0.8 * labels
        if ties:  # a few distinct values only: many ties, mixing positives, negatives and difficult examples
            scores = np.round(scores)
        assert average_precision(labels, scores) == _detectron2_ap(labels, scores)


def test_tied_examples_are_points_of_their_own():
    # fair-ssb's order of the tie at 0.8 (argsort, reversed) puts the positive before the negative here:
    # P=(1, 1, 2/3) at R=(.5, 1, 1) -> AP 1; one point for the tie (the old rule) would give 5/6.
    labels, scores = np.array([1, -1, 1, -1]), np.array([0.9, 0.8, 0.8, 0.1])
    assert np.argsort(scores)[::-1][1] == 2
    assert average_precision(labels, scores) == 1.0
    # everything tied: the order is argsort's, reversed (the last example first)
    assert average_precision(np.array([-1, 1, -1, -1]), np.zeros(4)) == pytest.approx(
        _detectron2_ap(np.array([-1, 1, -1, -1]), np.zeros(4)))


def test_difficult_examples_are_left_out():
    labels = np.array([1, 0, -1, 1])
    scores = np.array([0.9, 0.95, 0.8, 0.7])  # the difficult image ranks first; ignored it costs nothing
    assert average_precision(labels, scores) == pytest.approx(5 / 6)
    as_negative = average_precision(np.array([1, -1, -1, 1]), scores)
    assert as_negative < 5 / 6


def test_matches_the_anchors_formula_without_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.choice([-1, 1], size=60)
        labels[0] = 1
        scores = rng.standard_normal(60) + 0.7 * labels
        assert average_precision(labels, scores) == pytest.approx(_anchors_ap(labels, scores), abs=1e-12)


def test_no_positive_or_non_finite_score_is_an_error():
    with pytest.raises(DataError, match="no positive"):
        average_precision(np.array([-1, -1, 0]), np.array([0.3, 0.2, 0.1]))
    with pytest.raises(DataError, match="NaN or Inf"):
        average_precision(np.array([1, -1]), np.array([np.nan, 0.2]))


def test_mean_ap_names_the_class_without_positives():
    targets = np.array([[1, -1], [-1, 0], [1, -1]], dtype=np.float32)
    scores = np.array([[0.9, 0.1], [0.1, 0.5], [0.8, 0.3]])
    with pytest.raises(DataError, match="'bus'"):
        mean_average_precision(targets, scores, ["car", "bus"], what="test")
    m, aps = mean_average_precision(targets[:, :1], scores[:, :1], ["car"])
    assert m == aps[0] == 1.0
