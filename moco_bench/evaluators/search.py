"""Exact nearest neighbours by cosine similarity, streamed so that no N x D index needs to fit in memory.

Two backends give the same neighbours (up to the order of exact ties):

- ``torch``: each chunk of queries is multiplied with chunks of train rows (torch's matmul, the same BLAS the rest
  of the suite runs on, CPU or GPU) and one top-k of the largest k is kept, merged chunk by chunk.
- ``faiss``: with a CUDA device and a faiss build that sees a GPU (the ``gpu`` extra), a GPU flat index holds the
  train rows; on the CPU, ``faiss.knn`` per chunk merged in a ``ResultHeap``. The faiss-cpu wheel bundles its own
  BLAS, which is several times slower than torch's on recent CPUs, so ``auto`` takes faiss on GPUs only.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from moco_bench.core.errors import ConfigError, DataError
from moco_bench.evaluators.features import read_rows

BACKENDS = ("auto", "torch", "faiss")
BLOCK = 2 ** 26  # similarities held at once by the torch search: 256 MiB of float32
# Train rows per streamed chunk when a caller names none (the kNN protocol's config sets its own). Not a power of
# two: with 65,536 rows the similarity matrix's rows are 256 KiB apart, their cache sets collide, and the matmul
# runs 15% slower (1000 x 2048 queries, two AVX-512 cores: 150 GFLOP/s against 173 at 65,000 or 100,000 rows).
TRAIN_CHUNK = 120_000
QUERY_CHUNK = 16_384


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def faiss_gpu_ok(device: str) -> bool:
    """Whether faiss can search on ``device``: a CUDA device and a faiss build that sees a GPU."""
    faiss = _faiss()
    return (str(device).startswith("cuda") and faiss is not None and hasattr(faiss, "StandardGpuResources")
            and faiss.get_num_gpus() > 0)


def choose_backend(backend: str, device: str) -> str:
    """``auto``: faiss on a GPU it can use, else torch. ``faiss`` without faiss installed is an error."""
    if backend not in BACKENDS:
        raise ConfigError(f"knn.backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "faiss" if faiss_gpu_ok(device) else "torch"
    if backend == "faiss" and _faiss() is None:
        raise ConfigError("knn.backend faiss: faiss is not installed (pip install '.[cpu]' or '.[gpu]')")
    return backend


def describe(backend: str, device: str) -> str:
    """The backend as the result records it."""
    if backend == "faiss":
        return "faiss GpuIndexFlatIP" if faiss_gpu_ok(device) else "faiss knn on CPU, streamed train chunks"
    return f"torch matmul + top-k on {device}, streamed train chunks"


def normalized(rows: np.ndarray, start: int, what: str) -> np.ndarray:
    """``rows`` (a fresh chunk from read_rows) divided in place by max(||row||, 1e-12), torch's normalize rule,
    on torch's threads (NumPy's reductions run on one); NaN/Inf is an error naming the rows."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    t = torch.from_numpy(rows)
    norms = torch.linalg.vector_norm(t, dim=1, keepdim=True)  # a reduction: no chunk-sized temporary
    bad = torch.nonzero(~torch.isfinite(norms[:, 0])).flatten().numpy()
    if len(bad):
        raise DataError(f"kNN: {what} features of rows {(bad[:10] + start).tolist()} contain NaN or Inf")
    t.div_(norms.clamp_min_(1e-12))
    return rows


def search(train_feats, val_feats, k: int, *, query_chunk: int, train_chunk: int, device: str = "cpu",
           backend: str = "auto") -> Tuple[np.ndarray, np.ndarray]:
    """``(sims, indices)``, each ``(n_val, k)`` sorted by decreasing cosine similarity, of the ``k`` nearest
    train rows of each val row (both L2-normalized here). Inputs may be memory maps; they are read in chunks."""
    n_train = len(train_feats)
    if k > n_train:
        raise ConfigError(f"kNN: k={k} is larger than the training set ({n_train} images)")
    run = {"torch": _torch_search, "faiss": _faiss_search}[choose_backend(backend, device)]
    return run(train_feats, val_feats, k, query_chunk, train_chunk, device)


def _torch_search(train_feats, val_feats, k, query_chunk, train_chunk, device):
    """Train chunks read and normalized once per query chunk; queries multiplied with them in blocks that bound
    the similarity matrix to ``BLOCK`` floats; each block's top-k merged into the running top-k."""
    sims = np.empty((len(val_feats), k), dtype=np.float32)
    idx = np.empty((len(val_feats), k), dtype=np.int64)
    dev = torch.device(device)
    with torch.inference_mode():
        for qs in range(0, len(val_feats), query_chunk):
            queries = torch.from_numpy(normalized(read_rows(val_feats, qs, qs + query_chunk), qs, "val")).to(dev)
            best_s = torch.full((len(queries), k), -torch.inf, device=dev)
            best_i = torch.full((len(queries), k), -1, dtype=torch.int64, device=dev)
            for ts in range(0, len(train_feats), train_chunk):
                base = torch.from_numpy(normalized(read_rows(train_feats, ts, ts + train_chunk), ts, "train")).to(dev)
                step = max(1, BLOCK // len(base))
                for b in range(0, len(queries), step):
                    s, i = (queries[b:b + step] @ base.T).topk(min(k, len(base)), dim=1)
                    s, i = torch.cat([best_s[b:b + step], s], 1), torch.cat([best_i[b:b + step], i + ts], 1)
                    best_s[b:b + step], top = s.topk(k, dim=1)
                    best_i[b:b + step] = i.gather(1, top)
            sims[qs:qs + len(queries)], idx[qs:qs + len(queries)] = best_s.cpu().numpy(), best_i.cpu().numpy()
    return sims, idx


def _faiss_search(train_feats, val_feats, k, query_chunk, train_chunk, device):
    faiss = _faiss()
    sims = np.empty((len(val_feats), k), dtype=np.float32)
    idx = np.empty((len(val_feats), k), dtype=np.int64)
    if faiss_gpu_ok(device):
        res = faiss.StandardGpuResources()
        config = faiss.GpuIndexFlatConfig()
        config.device = torch.device(device).index or 0
        index = faiss.GpuIndexFlatIP(res, train_feats.shape[1], config)
        for start in range(0, len(train_feats), train_chunk):
            index.add(normalized(read_rows(train_feats, start, start + train_chunk), start, "train"))
        for start in range(0, len(val_feats), query_chunk):
            sims[start:start + query_chunk], idx[start:start + query_chunk] = index.search(
                normalized(read_rows(val_feats, start, start + query_chunk), start, "val"), k)
        return sims, idx
    for qs in range(0, len(val_feats), query_chunk):
        queries = normalized(read_rows(val_feats, qs, qs + query_chunk), qs, "val")
        heap = faiss.ResultHeap(len(queries), k, keep_max=True)
        for ts in range(0, len(train_feats), train_chunk):
            base = normalized(read_rows(train_feats, ts, ts + train_chunk), ts, "train")
            d, i = faiss.knn(queries, base, min(k, len(base)), metric=faiss.METRIC_INNER_PRODUCT)
            heap.add_result(d, i + ts)
        heap.finalize()
        sims[qs:qs + len(queries)], idx[qs:qs + len(queries)] = heap.D, heap.I
    return sims, idx
