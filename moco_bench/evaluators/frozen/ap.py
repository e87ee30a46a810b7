"""Average precision of the VOC07 classification protocol (fair_self_supervision_benchmark, vissl, mmselfsup).

AP is the area under the monotone precision envelope over every recall level ("all points", not VOC's
11-point sampling), exactly as fair-ssb's ``calculate_ap`` and detectron2's ``voc_ap(use_07_metric=False)``
compute it. Labels are VOC's: 1 present, -1 absent, 0 difficult (left out). Every scored example is one point
of the precision/recall curve, in the anchors' order: fair-ssb's ``get_precision_recall`` sorts with
``np.argsort(scores)[::-1]``, so tied scores are ranked as that sort leaves them (the VOC devkit and detectron2
also take one point per example); without ties the order is the same for every implementation.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from moco_bench.core.errors import DataError


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope, summed where recall changes (detectron2 ``voc_ap``, fair-ssb
    ``calculate_ap``): the curve is closed with (0, 0) and (1, 0)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.maximum.accumulate(np.concatenate(([0.0], precision, [0.0]))[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def average_precision(labels: np.ndarray, scores: np.ndarray, what: str = "AP") -> float:
    """AP (in [0, 1]) of ``scores`` for ``labels`` in {1, -1, 0}; 0 (difficult) is ignored.

    Raises:
        DataError: no positive example among the scored ones, or a score that is NaN/Inf.
    """
    labels, scores = np.asarray(labels).ravel(), np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{what}: {labels.shape[0]} labels but {scores.shape[0]} scores")
    keep = labels != 0
    positive, scores = labels[keep] > 0, scores[keep]
    n_pos = int(positive.sum())
    if n_pos == 0:
        raise DataError(f"{what}: no positive example (AP is undefined)")
    if not np.isfinite(scores).all():
        raise DataError(f"{what}: {int((~np.isfinite(scores)).sum())} score(s) are NaN or Inf")
    order = np.argsort(scores)[::-1]
    tp = np.cumsum(positive[order])
    fp = np.cumsum(~positive[order])
    return voc_ap(tp / n_pos, tp / (tp + fp))


def mean_average_precision(targets: np.ndarray, scores: np.ndarray, classes: Sequence[str],
                           what: str = "") -> Tuple[float, List[float]]:
    """(mAP, per-class AP) for ``(N, C)`` targets in {1, -1, 0} and ``(N, C)`` scores."""
    aps = [average_precision(targets[:, c], scores[:, c], what=f"{what} class {name!r}".strip())
           for c, name in enumerate(classes)]
    return float(np.mean(aps)), aps
