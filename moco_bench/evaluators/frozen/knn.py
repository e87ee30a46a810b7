"""Weighted kNN classification on frozen GAP features (mmselfsup knn_eval, from DINO's eval_knn).

Features are L2-normalized; each validation image's ``max(k)`` nearest train features by inner product (cosine)
are found once (:mod:`moco_bench.evaluators.search`, streamed: no N x D index, 10 GB for ImageNet at 2048-d, is
held in memory), and every ``k`` of the config is answered from that one search: the first ``k`` neighbours vote
``exp(sim / T)`` for their class, and classes are ranked as the reference ranks them
(:func:`moco_bench.evaluators.neighbours.vote`).
"""

from __future__ import annotations

import resource
from typing import Dict

import numpy as np
from omegaconf import DictConfig

from moco_bench.core.config import source_of
from moco_bench.core.errors import ConfigError
from moco_bench.evaluators.base import EvalContext, EvalOutput
from moco_bench.evaluators.features import check_finite, load_pair, split_info
from moco_bench.evaluators.neighbours import knn_multi_k
from moco_bench.evaluators.search import choose_backend, describe


def peak_rss_mib() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def knn(backbone, cfg: DictConfig, ctx: EvalContext) -> EvalOutput:
    """kNN on ``features.layers[0]`` (GAP): metrics ``top1@k<k>`` and ``top5@k<k>`` for every k of ``knn.k``."""
    layer = cfg.features.layers[0]
    train, val = load_pair(backbone, cfg, ctx, [layer], min_images=max(int(k) for k in cfg.knn.k))
    if train.labels.ndim != 1:
        raise ConfigError(f"{source_of(cfg)}: kNN votes for one class per image; the "
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
    info = {**split_info(cfg, train, val, [layer]), "temperature": float(cfg.knn.temperature),
            "index": describe(choose_backend(str(cfg.knn.backend), ctx.device), ctx.device)}
    examples = {"images": val.images, "root": str(cfg.data.root),
                "metrics": {f"top1@k{k}": {"kind": "accuracy", "hits": h} for k, h in top1_hits.items()}}
    return EvalOutput(metrics=metrics, details={"peak_rss_mib": peak_rss_mib()}, info=info, examples=examples)
