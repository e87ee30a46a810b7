"""The weighted kNN vote on frozen features, shared by the kNN protocol (:mod:`.frozen.knn`) and the pretraining
monitor: features L2-normalized, each query's ``max(k)`` nearest train features by inner product (cosine) found
once (:mod:`.search`), and every ``k`` answered from that one search (see :func:`vote`).
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np
import torch

from moco_bench.core.errors import ConfigError
from moco_bench.evaluators.search import QUERY_CHUNK, TRAIN_CHUNK, search


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return x if isinstance(x, np.ndarray) else np.asarray(x)  # keeps a cache memmap a memmap


def vote(sims: np.ndarray, neighbour_labels: np.ndarray, val_labels: np.ndarray, ks: Sequence[int], T: float,
         num_classes: int, chunk: int = 8192, top1_hits: Dict[int, np.ndarray] | None = None
         ) -> Dict[int, Tuple[float, float]]:
    """``{k: (top1 %, top5 %)}`` from the ``max(ks)`` sorted neighbours' similarities and labels; ``top1_hits``, when
    given, receives each image's top-1 correctness per k (the report's bootstrap resamples them).

    As DINO's ``knn_classifier`` (and mmselfsup's copy of it): the first ``k`` neighbours vote ``exp(sim / T)``
    (float32) for their class, every class is ranked by its vote sum with ``torch.sort(descending=True)``, top-1
    is the first class and top-5 asks whether the target is among the first ``min(5, k)``. A class without
    votes can therefore fill a top-5 slot when fewer than five classes received votes.
    """
    hits = {k: np.zeros(2, dtype=np.int64) for k in ks}
    if top1_hits is not None:
        top1_hits.update({k: np.zeros(len(sims), dtype=bool) for k in ks})
    for start in range(0, len(sims), chunk):
        w = torch.from_numpy(np.ascontiguousarray(sims[start:start + chunk], dtype=np.float32)).div(T).exp()
        lab = torch.from_numpy(neighbour_labels[start:start + chunk])
        target = torch.from_numpy(val_labels[start:start + chunk]).view(-1, 1)
        for k in ks:
            scores = torch.zeros(len(w), num_classes, dtype=torch.float32).scatter_add_(1, lab[:, :k], w[:, :k])
            _, ranked = scores.sort(1, True)
            correct = ranked[:, : min(5, k)] == target
            hits[k] += np.array([correct[:, 0].sum().item(), correct.any(dim=1).sum().item()])
            if top1_hits is not None:
                top1_hits[k][start:start + len(w)] = correct[:, 0].numpy()
    return {k: (100.0 * float(h[0]) / len(sims), 100.0 * float(h[1]) / len(sims)) for k, h in hits.items()}


def knn_multi_k(train_feats, train_labels, val_feats, val_labels, ks: Sequence[int], T: float,
                num_classes: int | None = None, *, query_chunk: int = QUERY_CHUNK, train_chunk: int = TRAIN_CHUNK,
                device: str = "cpu", backend: str = "auto", top1_hits: Dict[int, np.ndarray] | None = None
                ) -> Dict[int, Tuple[float, float]]:
    """``{k: (top1 %, top5 %)}`` for every ``k`` from one search of ``max(ks)`` neighbours.

    Accepts numpy arrays, memory maps or torch tensors (normalized or not).
    """
    train_labels = _as_numpy(train_labels).astype(np.int64)
    val_labels = _as_numpy(val_labels).astype(np.int64)
    train_feats, val_feats = _as_numpy(train_feats), _as_numpy(val_feats)
    if len(train_labels) != len(train_feats) or len(val_labels) != len(val_feats):
        raise ValueError("kNN: features and labels differ in length")
    if num_classes is None:
        num_classes = int(max(train_labels.max(), val_labels.max())) + 1
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ConfigError(f"kNN: k values must be positive integers, got {ks}")
    sims, idx = search(train_feats, val_feats, ks[-1], query_chunk=query_chunk, train_chunk=train_chunk,
                       device=device, backend=backend)
    return vote(sims, train_labels[idx], val_labels, ks, T, num_classes, top1_hits=top1_hits)


def knn_top1(train_feats, train_labels, val_feats, val_labels, k: int, T: float) -> float:
    """Top-1 (%) of the weighted kNN vote (the pretraining kNN monitor's number)."""
    return knn_multi_k(train_feats, train_labels, val_feats, val_labels, [k], T)[k][0]
