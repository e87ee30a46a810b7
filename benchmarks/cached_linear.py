"""Linear heads on cached features (bench_linear.py sections 3 and 4).

3. The probe grid (evaluate/imagenet_probe_grid.yaml: 13 learning rates x 2 layers = 26 heads trained together)
   against one main_lincls-style head (nn.Linear + torch.optim.SGD, momentum 0.9, weight decay 0) on the same
   cached features, the same epochs and batches: the grid's time over the single head's (its heads per unit cost).
4. The transfer suite's logistic regression: the torch L-BFGS against scikit-learn's on the same features and cost
   grid (evaluate/transfer_cifar10.yaml: warm-started path, max_iter 100, tol 1e-4): the time of each, the largest
   difference in validation accuracy over the grid, and whether both choose the same cost.

The features are Gaussian classes (cached-feature shapes: rows x dim), so that accuracies mean something.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from moco_bench.evaluators.transfer.logreg import costs
from moco_bench.evaluators.transfer.probe import HeadGrid
from moco_bench.evaluators.transfer.solvers import Solver


def _sync(device: str) -> float:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def blobs(n: int, d: int, k: int, seed: int, spread: float = 0.25):
    centres = np.random.default_rng(1000).normal(0, 1, (k, d)).astype(np.float32) * spread
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(0, 1, (n, d)).astype(np.float32)), y


def _single_head(x: torch.Tensor, y: torch.Tensor, k: int, epochs: int, batch: int, lr: float) -> torch.nn.Linear:
    head = torch.nn.Linear(x.shape[1], k).to(x.device)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
    steps = math.ceil(len(y) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps * epochs)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen).to(x.device)
        for i in range(steps):
            idx = order[i * batch:(i + 1) * batch]
            loss = torch.nn.functional.cross_entropy(head(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return head


def _grid(xs, y, k, lrs, epochs, batch):
    heads = {name: HeadGrid(x.shape[1], k, lrs, str(x.device), torch.Generator().manual_seed(0))
             for name, x in xs.items()}
    steps = math.ceil(len(y) / batch)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        order = torch.randperm(len(y), generator=gen).to(y.device)
        for i in range(steps):
            scale = 0.5 * (1 + math.cos(math.pi * (epoch * steps + i) / (steps * epochs)))
            idx = order[i * batch:(i + 1) * batch]
            for name, grid in heads.items():
                grid.step(xs[name][idx], y[idx], scale, 0.9, 0.0)
    return heads


def bench_probe_grid(device: str, n: int, dims=(2048, 1024), k: int = 1000, epochs: int = 2, batch: int = 256,
                     lrs=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)) -> float:
    """Seconds of the grid over seconds of one head; prints both and the heads per unit cost."""
    x0, y0 = blobs(n, dims[0], k, 0)
    xs = {f"layer{i}": torch.from_numpy(x0[:, :d].copy()).to(device) for i, d in enumerate(dims)}
    y = torch.from_numpy(y0).to(device)
    _single_head(xs["layer0"][:batch * 2], y[:batch * 2], k, 1, batch, 1.0)  # warm-up (kernels, allocator)
    t0 = _sync(device)
    _single_head(xs["layer0"], y, k, epochs, batch, 1.0)
    single = _sync(device) - t0
    t0 = _sync(device)
    heads = _grid(xs, y, k, list(lrs), epochs, batch)
    grid = _sync(device) - t0
    count = sum(len(h.lrs) for h in heads.values())
    print(f"\n## probe grid vs one main_lincls-style head ({n} cached rows, dims {list(dims)}, {k} classes, "
          f"{epochs} epochs, batch {batch}, {device})")
    print(f"one head: {single:.2f} s; grid of {count} heads: {grid:.2f} s; ratio {grid / single:.2f}x "
          f"({count / (grid / single):.1f} heads per single-head cost)")
    return grid / single


def bench_transfer_logreg(device: str, n: int, d: int, k: int, count: int, max_iter: int = 100) -> dict:
    """Torch vs scikit-learn L-BFGS over a cost grid on the same features; prints times and agreement."""
    x, y = blobs(n, d, k, 1)
    xv, yv = blobs(n // 4, d, k, 2)
    grid = costs([-6, 5], count)
    out = {}
    for kind in ("sklearn", "torch"):
        solver = Solver(kind, device if kind == "torch" else "cpu", max_iter=max_iter, tol=1e-4, warm_start=True,
                        dtype="float32")
        t0 = _sync(device)
        models = solver.path(x, y, grid, k)
        seconds = _sync(device) - t0
        acc = np.array([100.0 * (m.predict(xv) == yv).mean() for m in models])
        out[kind] = (seconds, acc)
    (ts, acc_s), (tt, acc_t) = out["sklearn"], out["torch"]
    print(f"\n## transfer logistic regression: torch L-BFGS ({device}) vs scikit-learn ({n} x {d}, {k} classes, "
          f"{count} costs, max_iter {max_iter})")
    print(f"scikit-learn: {ts:.1f} s; torch: {tt:.1f} s; speed-up {ts / tt:.1f}x")
    print(f"validation top-1 over the grid: largest difference {np.abs(acc_s - acc_t).max():.2f} points; chosen cost "
          f"sklearn {grid[int(np.argmax(acc_s))]:.3g} (val {acc_s.max():.2f}), torch {grid[int(np.argmax(acc_t))]:.3g} "
          f"(val {acc_t.max():.2f})")
    return {"sklearn_s": ts, "torch_s": tt, "max_acc_diff": float(np.abs(acc_s - acc_t).max())}
