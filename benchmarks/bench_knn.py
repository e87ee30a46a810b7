"""kNN benchmarks (``make bench``) on synthetic clustered GAP-like features (2048-d, 1000 classes).

1. Equivalence: top-1/top-5 of ``knn_multi_k`` (one torch search of max(k), streamed train chunks, then the
   vote) equal to the anchors' computation (DINO's ``knn_classifier``, as mmselfsup runs it: for each k
   separately, chunks of 1/100 of the queries, full similarity rows, topk(k), one-hot vote, sort). Target: equal.
2. Speed, at ``--sizes`` (train x val; default 20000x2000 and 100000x1000), every figure a ratio to its baseline
   measured in the same run: against the anchors' per-k search (target >= 3x) and against torch's own all-k
   search (the anchors' loop with one topk of max(k) for all k; target >= 1x). The faiss CPU search is shown
   for reference where faiss is installed.
3. Peak resident memory of the search (in a fresh subprocess) for a train set of ``--mem-train`` rows stored as a
   cache memory map; ``--mem-train 1281167`` is ImageNet's train set (10.5 GB of features on disk). The peak does
   not grow with the number of train rows: chunks of ``train_chunk`` rows are streamed.

Each timing is the fastest of ``--repeats`` runs, the settings alternating, since on a busy shared machine
other processes only ever add time. Exits 1 on a missed target.
Usage: ``python benchmarks/bench_knn.py [--sizes 20000x2000,100000x1000 --mem-train 262144 --mem-val 2000]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from moco_bench.evaluators.catalog import load_evaluation  # noqa: E402
from moco_bench.evaluators.frozen.knn import peak_rss_mib  # noqa: E402
from moco_bench.evaluators.neighbours import knn_multi_k  # noqa: E402

KNN = load_evaluation(REPO / "evaluate/imagenet_knn.yaml").knn
KS, T = [int(k) for k in KNN.k], float(KNN.temperature)


def clustered(n, d, classes, seed, chunk=16384, out=None):
    """GAP-like features: non-negative, a sparse class center plus noise (classes overlap, so top-1 is far from
    100% and ties in the vote are rare); written into ``out`` (a memmap) if given."""
    g = np.random.default_rng(1)
    centers = (np.abs(g.standard_normal((classes, d), dtype=np.float32)) * (g.random((classes, d)) < 0.05) * 0.8)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    feats = out if out is not None else np.empty((n, d), dtype=np.float32)
    for s in range(0, n, chunk):
        noise = rng.standard_normal((min(chunk, n - s), d), dtype=np.float32)
        feats[s:s + chunk] = np.maximum(centers[labels[s:s + chunk]] + noise + 0.5, 0)
    return feats, labels


def anchors_knn(train, train_labels, val, val_labels, k, classes):
    """The anchors' kNN for one k (DINO ``knn_classifier``, mmselfsup's copy), written out in plain torch."""
    tr = torch.nn.functional.normalize(torch.from_numpy(train), dim=1)
    tl = torch.from_numpy(train_labels)
    chunk = max(1, len(val) // 100)
    top1 = top5 = 0
    for s in range(0, len(val), chunk):
        q = torch.nn.functional.normalize(torch.from_numpy(val[s:s + chunk]), dim=1)
        sims, idx = (q @ tr.T).topk(k, dim=1)
        one_hot = torch.zeros(len(q) * k, classes).scatter_(1, tl[idx].view(-1, 1), 1)
        votes = (one_hot.view(len(q), k, classes) * (sims / T).exp().view(len(q), k, 1)).sum(1)
        correct = votes.sort(1, descending=True)[1] == torch.from_numpy(val_labels[s:s + chunk]).view(-1, 1)
        top1 += correct[:, 0].sum().item()
        top5 += correct[:, :min(5, k)].sum().item()
    return 100.0 * top1 / len(val), 100.0 * top5 / len(val)


def torch_all_k(train, train_labels, val, val_labels, ks, classes, chunk=1024):
    """torch's own all-k search: full similarity rows per chunk of queries, one topk of max(k), the vote per k."""
    from moco_bench.evaluators.neighbours import vote

    tr = torch.nn.functional.normalize(torch.from_numpy(train), dim=1)
    sims, idx = [], []
    for s in range(0, len(val), chunk):
        q = torch.nn.functional.normalize(torch.from_numpy(val[s:s + chunk]), dim=1)
        d, i = (q @ tr.T).topk(max(ks), dim=1)
        sims.append(d.numpy())
        idx.append(i.numpy())
    return vote(np.concatenate(sims), train_labels[np.concatenate(idx)], val_labels, ks, T, classes)


def write_child(args) -> None:
    """Write the ``--mem-train`` x 2048 feature file (as the cache does: an .npy memory map) and its labels."""
    mm = np.lib.format.open_memmap(Path(args.tmp) / "train.npy", mode="w+", dtype=np.float32,
                                   shape=(args.mem_train, 2048))
    _, labels = clustered(args.mem_train, 2048, 1000, 0, out=mm)
    mm.flush()
    np.save(Path(args.tmp) / "labels.npy", labels)


def memory_child(args) -> None:
    """In a fresh process: search the written file with the protocol's chunk sizes; print the peak RSS."""
    train, train_labels = np.load(Path(args.tmp) / "train.npy", mmap_mode="r"), np.load(Path(args.tmp) / "labels.npy")
    val, val_labels = clustered(args.mem_val, 2048, 1000, 1)
    before = peak_rss_mib()
    t0 = time.perf_counter()
    res = knn_multi_k(train, train_labels, val, val_labels, KS, T, 1000, query_chunk=int(KNN.query_chunk),
                      train_chunk=int(KNN.train_chunk))
    print(f"memory: {args.mem_train} train x 2048 ({args.mem_train * 2048 * 4 / 2**30:.1f} GiB cache file), "
          f"{args.mem_val} val, chunks {KNN.train_chunk} train / {KNN.query_chunk} val rows: search "
          f"{time.perf_counter() - t0:.1f}s, peak RSS {peak_rss_mib():.0f} MiB (before the search {before:.0f} MiB; "
          f"top1@k20 {res[20][0]:.2f})", flush=True)


def best_of(repeats, runs):
    """``{name: fastest seconds}`` over ``repeats`` rounds of ``runs`` (name -> callable), alternating."""
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def speed(n_train, n_val, repeats) -> bool:
    train, train_labels = clustered(n_train, 2048, 1000, 0)
    val, val_labels = clustered(n_val, 2048, 1000, 1)
    chunks = {"query_chunk": int(KNN.query_chunk), "train_chunk": int(KNN.train_chunk)}  # the protocol's
    runs = {"ours (torch search, all k)": lambda: knn_multi_k(train, train_labels, val, val_labels, KS, T, 1000,
                                                              **chunks),
            "anchors, per k": lambda: [anchors_knn(train, train_labels, val, val_labels, k, 1000) for k in KS],
            "torch all-k": lambda: torch_all_k(train, train_labels, val, val_labels, KS, 1000)}
    if importlib.util.find_spec("faiss"):
        runs["faiss CPU search, all k"] = lambda: knn_multi_k(train, train_labels, val, val_labels, KS, T, 1000,
                                                              backend="faiss", **chunks)
    best = best_of(repeats, runs)
    ours = best["ours (torch search, all k)"]
    print(f"{n_train} train x {n_val} val, 2048-d, k={KS} (load average {os.getloadavg()[0]:.1f}):")
    for name, seconds in best.items():
        print(f"  {name:<28} {seconds:7.2f}s   ours is {seconds / ours:5.2f}x faster")
    ok = best["anchors, per k"] / ours >= 3 and best["torch all-k"] / ours >= 1
    print(f"  targets: >= 3x the anchors, >= 1x torch all-k: {'PASS' if ok else 'MISS'}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20000x2000,100000x1000", help="train x val sizes, comma-separated")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--mem-train", type=int, default=262144)
    ap.add_argument("--mem-val", type=int, default=2000)
    ap.add_argument("--tmp", default=None, help="folder for the memory test's feature file")
    ap.add_argument("--child", choices=["write", "memory"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        (write_child if args.child == "write" else memory_child)(args)
        return 0
    train, train_labels = clustered(4000, 2048, 1000, 0)
    val, val_labels = clustered(1000, 2048, 1000, 1)
    one = knn_multi_k(train, train_labels, val, val_labels, KS, T, 1000)
    equal = True
    for k in KS:
        ref = anchors_knn(train, train_labels, val, val_labels, k, 1000)
        equal &= one[k] == ref
        print(f"k={k:3d} ours top1/top5 {one[k][0]:.2f}/{one[k][1]:.2f}  anchors {ref[0]:.2f}/{ref[1]:.2f}")
    print(f"equivalence (top-1 and top-5 identical for every k): {'PASS' if equal else 'MISS'}")
    fast = all([speed(*map(int, size.split("x")), args.repeats) for size in args.sizes.split(",")])

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        sizes = ["--mem-train", str(args.mem_train), "--mem-val", str(args.mem_val), "--tmp", tmp]
        subprocess.run([sys.executable, __file__, "--child", "write", *sizes], check=True)
        child = subprocess.run([sys.executable, __file__, "--child", "memory", *sizes], capture_output=True, text=True)
    print(child.stdout.strip() or child.stderr[-2000:])
    return 0 if equal and fast and child.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
