"""Average precision of the VOC07 classification protocol (fair_self_supervision_benchmark, vissl, mmselfsup).

AP is the area under the monotone precision envelope over every recall level ("all points", not VOC's
11-point sampling). Labels are VOC's: 1 present, -1 absent, 0 difficult (left out). Tied scores form one
operating point, so the result does not depend on how a sort orders equal scores (the anchors' argsort
does, by accident); without ties the two agree exactly.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from moco_bench.errors import DataError


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
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order]
    tp = np.cumsum(positive)
    fp = np.cumsum(~positive)
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores) != 0), len(scores) - 1]
    tp, fp = tp[last_of_tie], fp[last_of_tie]
    precision = tp / (tp + fp)
    recall = tp / n_pos
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * envelope))


def mean_average_precision(targets: np.ndarray, scores: np.ndarray, classes: Sequence[str],
                           what: str = "") -> Tuple[float, List[float]]:
    """(mAP, per-class AP) for ``(N, C)`` targets in {1, -1, 0} and ``(N, C)`` scores."""
    aps = [average_precision(targets[:, c], scores[:, c], what=f"{what} class {name!r}".strip())
           for c, name in enumerate(classes)]
    return float(np.mean(aps)), aps
