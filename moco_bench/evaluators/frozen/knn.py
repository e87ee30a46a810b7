"""Weighted kNN classification on frozen GAP features (mmselfsup knn_eval, from DINO's eval_knn).

Features are L2-normalized; each validation image's ``max(k)`` nearest train features by inner product
(cosine) are found once (:mod:`.search`, streamed: no N x D index, 10 GB for ImageNet at 2048-d, is held in
memory), and every ``k`` of the config is answered from that one search: the first ``k`` neighbours vote
``exp(sim / T)`` for their class, and classes are ranked as the reference ranks them (see :func:`vote`).
"""

from __future__ import annotations

import resource
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
from omegaconf import DictConfig

from moco_bench.core.errors import ConfigError, DataError
from moco_bench.evaluators.base import EVALUATORS, EvalContext, EvalOutput
from moco_bench.evaluators.frozen.features import check_finite, load_split
from moco_bench.evaluators.frozen.search import QUERY_CHUNK, TRAIN_CHUNK, choose_backend, describe, search


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


def peak_rss_mib() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@EVALUATORS.register("knn")
def knn(backbone, cfg: DictConfig, ctx: EvalContext) -> EvalOutput:
    """kNN on ``features.layers[0]`` (GAP): metrics ``top1@k<k>`` and ``top5@k<k>`` for every k of ``knn.k``."""
    layer = cfg.features.layers[0]
    with ctx.stage("features"):
        train = load_split(backbone, cfg, ctx.cache_dir, cfg.data.train_split, device=ctx.device,
                           workers=ctx.workers, layers=[layer], min_images=max(int(k) for k in cfg.knn.k))
        val = load_split(backbone, cfg, ctx.cache_dir, cfg.data.test_split, device=ctx.device, workers=ctx.workers,
                         layers=[layer])
    if train.classes != val.classes:
        raise DataError(f"{cfg.data.root}: {cfg.data.train_split} and {cfg.data.test_split} have different classes")
    if train.labels.ndim != 1:
        raise ConfigError(f"{cfg.get('_source_', 'config')}: kNN votes for one class per image; the "
                          f"{cfg.data.reader} reader gives several (multi-label)")
    top1_hits: Dict[int, np.ndarray] = {}
    with ctx.stage("knn"):
        check_finite(train.features[layer], train.images, f"{cfg.data.train_split} split")
        check_finite(val.features[layer], val.images, f"{cfg.data.test_split} split")
        res = knn_multi_k(train.features[layer], train.labels, val.features[layer], val.labels, list(cfg.knn.k),
                          float(cfg.knn.temperature), len(train.classes), query_chunk=int(cfg.knn.query_chunk),
                          train_chunk=int(cfg.knn.train_chunk), device=ctx.device, backend=str(cfg.knn.backend),
                          top1_hits=top1_hits)
    metrics = {}
    for k, (top1, top5) in res.items():
        metrics[f"top1@k{k}"], metrics[f"top5@k{k}"] = top1, top5
    info = {"dataset": str(cfg.data.name), "dataset_root": str(cfg.data.root),
            "split": f"{cfg.data.train_split}->{cfg.data.test_split}",
            "layer": layer, "precision": str(cfg.features.precision), "temperature": float(cfg.knn.temperature),
            "feature_cache": {"train": train.cache, "val": val.cache}, "runtime": train.runtime,
            "index": describe(choose_backend(str(cfg.knn.backend), ctx.device), ctx.device)}
    examples = {"images": val.images, "root": str(cfg.data.root),
                "metrics": {f"top1@k{k}": {"kind": "accuracy", "hits": h} for k, h in top1_hits.items()}}
    return EvalOutput(metrics=metrics, details={"peak_rss_mib": peak_rss_mib()}, info=info, examples=examples)
