"""The fast linear probe grid on cached features: every (layer, learning rate) head trained together, one pass
over the cached features per epoch (as dinov2's eval/linear.py trains its grid), the head chosen on a held-out
part of train, and only that head evaluated, once, on the test split.

The anchors that train such a grid report the best head on the split they report (selection on test); here
the test split is read after the choice. It is another protocol than main_lincls (no augmentation: one cached
centre crop per image; SGD on a grid of learning rates), so its results carry its own benchmark and are never
set beside main_lincls's published rows.
"""

from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from moco_bench.core.errors import ConfigError, DataError
from moco_bench.evaluators.base import EvalContext, EvalOutput
from moco_bench.evaluators.features import check_finite, load_split, read_rows
from moco_bench.evaluators.transfer.logreg import carve_validation


class HeadGrid:
    """``len(lrs)`` linear heads on one layer's features, stacked ``(L, K, D)``, updated by SGD with momentum
    and weight decay (PyTorch's update rule), each at its own learning rate."""

    def __init__(self, dim: int, classes: int, lrs: Sequence[float], device: str, generator: torch.Generator):
        n = len(lrs)
        self.w = (torch.randn(n, classes, dim, generator=generator) * 0.01).to(device)
        self.b = torch.zeros(n, classes, device=device)
        self.lrs = torch.tensor(list(lrs), dtype=torch.float32, device=device)
        self.bufs = [torch.zeros_like(self.w), torch.zeros_like(self.b)]

    def logits(self, x: torch.Tensor, w: torch.Tensor | None = None, b: torch.Tensor | None = None) -> torch.Tensor:
        """``(L, B, K)``: every head's scores of the batch, from one matrix product over all heads' rows."""
        w, b = (self.w if w is None else w), (self.b if b is None else b)
        n, k, d = w.shape
        return (x @ w.reshape(n * k, d).T).view(len(x), n, k).transpose(0, 1) + b[:, None, :]

    def step(self, x: torch.Tensor, y: torch.Tensor, scale: float, momentum: float, weight_decay: float) -> None:
        w, b = self.w.requires_grad_(True), self.b.requires_grad_(True)
        logits = self.logits(x, w, b)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.repeat(len(self.lrs)), reduction="sum")
        gw, gb = torch.autograd.grad(loss / len(y), [w, b])  # each head's mean loss over the batch
        with torch.no_grad():
            for param, grad, buf in ((self.w, gw, self.bufs[0]), (self.b, gb, self.bufs[1])):
                buf.mul_(momentum).add_(grad)
                if weight_decay:
                    buf.add_(param, alpha=weight_decay)
                param.sub_((scale * self.lrs).view(-1, *[1] * (param.dim() - 1)) * buf)
        self.w, self.b = self.w.detach(), self.b.detach()


def _device_rows(features: np.ndarray, rows: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(features[np.sort(rows)] if len(rows) else features[:0])).to(device)


def train_grid(feats: Dict[str, np.ndarray], labels: np.ndarray, rows: np.ndarray, classes: int, g,
               device: str) -> Dict[str, HeadGrid]:
    """Every layer's head grid trained on ``rows`` of the cached features, all heads on each batch."""
    gen = torch.Generator().manual_seed(int(g.seed))
    heads = {layer: HeadGrid(f.shape[1], classes, list(g.lrs), device, gen) for layer, f in feats.items()}
    x = {layer: _device_rows(f, rows, device) for layer, f in feats.items()}
    y = torch.from_numpy(labels[np.sort(rows)]).long().to(device)
    steps_per_epoch = math.ceil(len(y) / int(g.batch_size))
    total = steps_per_epoch * int(g.epochs)
    for epoch in range(int(g.epochs)):
        order = torch.randperm(len(y), generator=gen).to(device)
        for i in range(steps_per_epoch):
            t = epoch * steps_per_epoch + i
            scale = 0.5 * (1 + math.cos(math.pi * t / total)) if g.schedule == "cosine" else 1.0
            idx = order[i * int(g.batch_size):(i + 1) * int(g.batch_size)]
            for layer, grid in heads.items():
                grid.step(x[layer][idx], y[idx], scale, float(g.momentum), float(g.weight_decay))
    return heads


@torch.no_grad()
def accuracies(grid: HeadGrid, x: np.ndarray, y: np.ndarray, device: str, chunk: int) -> np.ndarray:
    """Top-1 (%) of every head of ``grid`` on ``(x, y)``, streamed ``chunk`` rows at a time."""
    hits = torch.zeros(len(grid.lrs), dtype=torch.float64)
    for start in range(0, len(y), chunk):
        xb = torch.from_numpy(read_rows(x, start, start + chunk)).to(device)
        yb = torch.from_numpy(y[start:start + chunk]).long().to(device)
        hits += (grid.logits(xb).argmax(-1) == yb).sum(1).double().cpu()
    return (100.0 * hits / max(len(y), 1)).numpy()


def choose(heads: Dict[str, HeadGrid], feats, labels, rows, lrs, device: str, chunk: int):
    """(layer, lr index, {"layer lr": held-out top-1}) of the best head on the held-out rows."""
    table: Dict[str, float] = {}
    best = (None, -1, -1.0)
    order = np.sort(rows)
    for layer, grid in heads.items():
        acc = accuracies(grid, np.asarray(feats[layer])[order], labels[order], device, chunk)
        for j, a in enumerate(acc):
            table[f"{layer} lr{lrs[j]:g}"] = float(a)
            if a > best[2]:
                best = (layer, j, float(a))
    return best[0], best[1], table


def probe_grid(backbone, cfg: DictConfig, ctx: EvalContext) -> EvalOutput:
    """``top1`` of the head chosen on the held-out part of train, on ``data.test_split``."""
    g, layers = cfg.grid, list(cfg.features.layers)
    with ctx.stage("features"):
        train = load_split(backbone, cfg, ctx.cache_dir, cfg.data.train_split, device=ctx.device, workers=ctx.workers)
        test = load_split(backbone, cfg, ctx.cache_dir, cfg.data.test_split, device=ctx.device, workers=ctx.workers)
    if train.labels.ndim != 1:
        raise ConfigError(f"{cfg.get('_source_', 'config')}: the probe grid trains single-label heads")
    if train.classes != test.classes:
        raise DataError(f"{cfg.data.root}: {cfg.data.train_split} and {cfg.data.test_split} have other classes")
    for layer in layers:
        check_finite(train.features[layer], train.images, f"{cfg.data.train_split} split")
        check_finite(test.features[layer], test.images, f"{cfg.data.test_split} split")
    fit_rows, held = carve_validation(len(train.labels), float(g.holdout_fraction), int(g.seed))
    if len(held) == 0 or len(fit_rows) == 0:
        raise ConfigError(f"{cfg.get('_source_', 'config')}: grid.holdout_fraction {g.holdout_fraction} leaves no "
                          f"held-out or no training rows of {len(train.labels)}")
    with ctx.stage("grid"):
        heads = train_grid(train.features, train.labels, fit_rows, len(train.classes), g, ctx.device)
        layer, j, table = choose(heads, train.features, train.labels, held, list(g.lrs), ctx.device,
                                 int(g.device_batch))
    with ctx.stage("test"):
        chosen = heads[layer]
        acc = accuracies(chosen, np.asarray(test.features[layer]), test.labels, ctx.device, int(g.device_batch))[j]
    info = {"dataset": str(cfg.data.name), "dataset_root": str(cfg.data.root), "layer": layer,
            "split": f"{cfg.data.train_split}->{cfg.data.test_split}", "precision": str(cfg.features.precision),
            "selection": f"{g.holdout_fraction:g} of {cfg.data.train_split} held out, seed {g.seed}",
            "feature_cache": {"train": train.cache, "test": test.cache}}
    details = {"chosen": {"layer": layer, "lr": float(g.lrs[j])}, "holdout_top1": table,
               "heads": len(layers) * len(g.lrs), "images": {"fit": len(fit_rows), "holdout": len(held)}}
    return EvalOutput(metrics={"top1": float(acc)}, details=details, info=info)

