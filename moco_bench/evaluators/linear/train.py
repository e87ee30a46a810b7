"""The training loop shared by the linear protocols: heads on a frozen backbone, step schedule, exact resume, DDP.

The backbone runs in eval mode under ``no_grad`` (BatchNorm statistics are part of the pretrained model, and
train mode would update them even without gradients: moco's ``main_lincls.py``); only the heads get gradients.
After the first epoch of every run, every backbone tensor is compared with the pretrained one and the run
stops if any changed. Several heads are trained from one backbone pass: their parameters are disjoint, so the
summed loss gives each head exactly the gradient it would get alone.

Resume is exact at epoch boundaries: each epoch's shuffling and augmentation draw from generators seeded by
(seed, epoch), and ``checkpoint.pth.tar`` (written atomically every epoch) holds heads, optimizer, scheduler and
the per-epoch history. A checkpoint whose fingerprint (config, backbone, world size) differs is not resumed.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from moco_bench.core.atomic import atomic_torch_save, atomic_write_text
from moco_bench.core.distributed import DistEnv, all_finite
from moco_bench.core.errors import ConfigError, TrainingDiverged
from moco_bench.core.progress import bar
from moco_bench.evaluators.linear.heads import Heads

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pth.tar"


class BackboneChanged(RuntimeError):
    """A backbone tensor differs from the pretrained one: the protocol's frozen-backbone premise is broken."""


@dataclass
class TrainConfig:
    """The optimization numbers of a linear protocol (from the config's ``optim`` and ``schedule`` blocks)."""

    epochs: int
    milestones: List[int]
    gamma: float
    lr: float
    batch_size: int
    momentum: float
    weight_decay: float
    norm_weight_decay: float
    nesterov: bool
    seed: int
    val_every: int
    precision: str
    channels_last: bool

    @classmethod
    def from_config(cls, cfg) -> "TrainConfig":
        o, s, f = cfg.optim, cfg.schedule, cfg.features
        lr = float(o.lr) * (float(o.batch_size) / float(o.base_batch) if o.lr_scaling == "linear" else 1.0)
        return cls(epochs=int(s.epochs), milestones=[int(m) for m in s.milestones], gamma=float(s.gamma), lr=lr,
                   batch_size=int(o.batch_size), momentum=float(o.momentum), weight_decay=float(o.weight_decay),
                   norm_weight_decay=float(o.norm_weight_decay), nesterov=bool(o.nesterov), seed=int(cfg.seed),
                   val_every=int(s.val_every), precision=str(f.precision), channels_last=bool(f.channels_last))

    def scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.MultiStepLR:
        """x ``gamma`` after each epoch of ``milestones`` (stepped once per epoch, as mmselfsup and main_lincls)."""
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=self.milestones, gamma=self.gamma)

    def validates(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (from 1) ends with a validation: every ``val_every``-th, and the last."""
        return epoch % self.val_every == 0 or epoch == self.epochs

    def lr_per_epoch(self) -> List[float]:
        """The learning rate of each epoch (epoch 1 first) as :func:`train_heads` steps it."""
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=self.lr)
        scheduler, out = self.scheduler(optimizer), []
        for _ in range(self.epochs):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out


@dataclass
class LinearRun:
    """Everything one training of linear heads needs: what to train, on what, where its state lives.

    ``extract(images) -> {layer: features}`` runs the frozen ``backbone`` (or returns cached features);
    ``reference`` holds the backbone's pretrained tensors for the frozen check; ``fingerprint`` says which run a
    checkpoint in ``out_dir`` belongs to (a different one is not resumed).
    """

    extract: Callable
    heads: Heads
    backbone: nn.Module
    reference: Mapping[str, torch.Tensor]
    train_set: Dataset
    val_set: Dataset
    tc: TrainConfig
    num_classes: int
    out_dir: Path
    env: DistEnv
    workers: int
    fingerprint: str
    source: str
    stage: Callable = lambda name: contextlib.nullcontext()


def check_frozen(module: nn.Module, reference: Mapping[str, torch.Tensor], when: str) -> None:
    """Raise :class:`BackboneChanged` naming the tensors of ``module`` that differ from ``reference``."""
    state = module.state_dict()
    changed = [k for k, v in reference.items() if k not in state or not torch.equal(state[k].cpu(), v)]
    if changed:
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        raise BackboneChanged(f"{when}: backbone tensor(s) {', '.join(changed[:5])}{more} changed during linear "
                              "training; the backbone must stay frozen (eval mode, no gradients)")


def _optimizer(heads: nn.Module, tc: TrainConfig) -> torch.optim.SGD:
    norm, other = [], []
    for module in heads.modules():
        target = norm if isinstance(module, nn.modules.batchnorm._BatchNorm) else other
        target.extend(p for p in module.parameters(recurse=False) if p.requires_grad)
    groups = [{"params": other, "weight_decay": tc.weight_decay}]
    if norm:
        groups.append({"params": norm, "weight_decay": tc.norm_weight_decay})
    # The fused kernel makes one pass over each weight: for five 9k x 1000 heads on CPU it cuts the step ~7x,
    # which keeps the multi-head epoch close to a single-head one (benchmarks/bench_linear.py).
    fused = all(p.device.type in ("cpu", "cuda") for p in other + norm)
    return torch.optim.SGD(groups, lr=tc.lr, momentum=tc.momentum, nesterov=tc.nesterov, fused=fused)


def _to(x, device, channels_last: bool):
    if isinstance(x, Mapping):
        return {k: v.to(device, non_blocking=True) for k, v in x.items()}
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _autocast(device: torch.device, tc: TrainConfig):
    """The frozen backbone's forward in ``features.precision`` (autocast; fp32: off). The heads stay fp32."""
    return torch.autocast(device.type, dtype=PRECISIONS[tc.precision], enabled=tc.precision != "fp32")


@torch.no_grad()
def evaluate(extract: Callable, heads: nn.Module, loader: DataLoader, env: DistEnv, tc: TrainConfig,
             num_classes: int) -> Dict[str, Dict[str, float]]:
    """Top-1 / top-5 (%) per head over the whole loader (summed over ranks), and ``hits``: each val image's top-1
    correctness in the val set's order (the report's bootstrap resamples them)."""
    heads.eval()
    counts: Optional[torch.Tensor] = None
    names: List[str] = []
    hits: Dict[str, List[torch.Tensor]] = {}
    k = min(5, num_classes)
    for x, y in bar(loader, desc="val", leave=False, disable=not env.is_main):
        x, y = _to(x, env.device, tc.channels_last), y.to(env.device)
        with _autocast(env.device, tc):
            feats = extract(x)
        logits = heads({n: f.float() for n, f in feats.items()})
        names = list(logits)
        if counts is None:
            counts = torch.zeros(len(names), 3, dtype=torch.float64, device=env.device)
        for i, name in enumerate(names):
            top = logits[name].topk(k, dim=1).indices
            hit = top.eq(y[:, None])
            hits.setdefault(name, []).append(hit[:, 0].to(torch.uint8))
            counts[i, 0] += hit[:, 0].sum()
            counts[i, 1] += hit.any(dim=1).sum()
            counts[i, 2] += y.numel()
    if env.world_size > 1:
        dist.all_reduce(counts)
    return {n: {"top1": float(100 * c[0] / c[2]), "top5": float(100 * c[1] / c[2]),
                "hits": _in_val_order(torch.cat(hits[n]), env)} for n, c in zip(names, counts)}


def _in_val_order(local: torch.Tensor, env: DistEnv) -> np.ndarray:
    """Every rank's hits in the val set's order: rank r evaluated images r, r + W, r + 2W, ... (:func:`_loaders`)."""
    if env.world_size == 1:
        return local.cpu().numpy().astype(bool)
    sizes = [torch.zeros(1, dtype=torch.int64, device=env.device) for _ in range(env.world_size)]
    dist.all_gather(sizes, torch.tensor([local.numel()], device=env.device))
    padded = torch.zeros(int(max(sizes)), dtype=torch.uint8, device=env.device)
    padded[:local.numel()] = local
    parts = [torch.zeros_like(padded) for _ in range(env.world_size)]
    dist.all_gather(parts, padded)
    out = np.zeros(int(sum(sizes)), dtype=bool)
    for r, (part, size) in enumerate(zip(parts, sizes)):
        out[r::env.world_size] = part[:int(size)].cpu().numpy().astype(bool)
    return out


def _keep_best_hits(best: dict, acc: Dict[str, dict], epoch: int) -> None:
    """Per head, the val hits of its best epoch so far (the first best, as :func:`summarize` picks it), packed."""
    for name, a in acc.items():
        if name not in best or a["top1"] > best[name]["top1"]:
            best[name] = {"epoch": epoch, "top1": a["top1"], "n": len(a["hits"]),
                          "hits": torch.from_numpy(np.packbits(a["hits"]))}


def _write_log(path: Path, history: List[dict]) -> None:
    out = io.StringIO()
    fields = sorted({k for row in history for k in row}, key=lambda k: (k != "epoch", k))
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, out.getvalue())


def summarize(history: List[dict], layers: List[str]) -> Dict[str, Dict[str, float]]:
    """Per layer: best top-1 over the evaluated epochs (first one on ties) with its top-5 and epoch, and the last."""
    evaluated = [row for row in history if f"{layers[0]}_top1" in row]
    out = {}
    for name in layers:
        best = max(evaluated, key=lambda row: row[f"{name}_top1"])
        last = evaluated[-1]
        out[name] = {"top1": best[f"{name}_top1"], "top5": best[f"{name}_top5"], "best_epoch": best["epoch"],
                     "top1_last": last[f"{name}_top1"], "top5_last": last[f"{name}_top5"]}
    return out


def _resume(path: Path, fingerprint: str, heads: nn.Module, optimizer, scheduler) -> Optional[dict]:
    """Load ``path`` into heads, optimizer and scheduler when it was made by the same run; else None."""
    if not path.is_file():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("fingerprint") != fingerprint:
        log.warning("%s: made with another config, backbone or world size; starting over", path)
        return None
    heads.load_state_dict(ckpt["heads"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    log.info("%s: resuming after epoch %d", path, ckpt["epoch"])
    return ckpt


def _loaders(run: LinearRun):
    """Train loader (shuffled by ``generator``, or a DistributedSampler) and this rank's share of val."""
    env, generator, sampler, val_set = run.env, torch.Generator(), None, run.val_set
    if env.world_size > 1:
        sampler = DistributedSampler(run.train_set, num_replicas=env.world_size, rank=env.rank, shuffle=True,
                                     seed=run.tc.seed)
        val_set = Subset(val_set, range(env.rank, len(val_set), env.world_size))
    pin, per_rank = env.device.type == "cuda", run.tc.batch_size // env.world_size
    train = DataLoader(run.train_set, batch_size=per_rank, shuffle=sampler is None, sampler=sampler,
                       num_workers=run.workers, generator=generator, pin_memory=pin)
    val = DataLoader(val_set, batch_size=per_rank, shuffle=False, num_workers=run.workers, pin_memory=pin)
    return train, val, sampler, generator


def _train_epoch(run: LinearRun, model, layers, loader, optimizer, epoch: int) -> Dict[str, float]:
    """One pass over ``loader``; returns the mean loss per head (over all ranks)."""
    env, tc = run.env, run.tc
    lr = optimizer.param_groups[0]["lr"]
    loss_sum = torch.zeros(len(layers) + 1, dtype=torch.float64, device=env.device)  # per head, then the count
    progress = bar(loader, desc=f"epoch {epoch + 1}/{tc.epochs}", leave=False, disable=not env.is_main)
    for step, (x, y) in enumerate(progress, start=1):
        x, y = _to(x, env.device, tc.channels_last), y.to(env.device, non_blocking=True)
        with torch.no_grad(), _autocast(env.device, tc):
            feats = run.extract(x)
        logits = model({n: f.float() for n, f in feats.items()})
        losses = torch.stack([F.cross_entropy(logits[n], y) for n in layers])
        loss = losses.sum()
        if not all_finite(loss):
            raise TrainingDiverged(
                f"{run.source}: the loss became {loss.item()} at epoch {epoch + 1}/{tc.epochs}, step "
                f"{step}/{len(loader)} (lr {lr:g}); lower optim.lr or check the backbone's weights")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum[:-1] += losses.detach().double() * y.numel()
        loss_sum[-1] += y.numel()
    if env.world_size > 1:
        dist.all_reduce(loss_sum)
    return {f"{n}_loss": float(loss_sum[i] / loss_sum[-1]) for i, n in enumerate(layers)}


def _distributed(heads: Heads, env: DistEnv) -> nn.Module:
    """The heads as trained: DDP over the ranks, with synchronized head BN on GPUs (mmselfsup's SyncBN; CPU
    processes keep per-rank statistics, as torch's SyncBatchNorm refuses CPU tensors)."""
    if env.world_size == 1:
        return heads
    model = nn.SyncBatchNorm.convert_sync_batchnorm(heads) if env.device.type == "cuda" else heads
    return nn.parallel.DistributedDataParallel(model, device_ids=[env.device] if env.device.type == "cuda" else None)


def train_heads(run: LinearRun) -> dict:
    """Train ``run.heads`` on ``run.extract(images)`` and evaluate them each epoch (or every ``val_every``).

    Returns ``{"summary": summarize(...), "history": [...], "resumed_from": epoch or None, "frozen_check": text,
    "hits": {head: val hits of its best epoch}}`` (a head resumed from a checkpoint that predates them has none).
    Raises :class:`TrainingDiverged` on a non-finite loss and :class:`BackboneChanged` when the backbone moved.
    """
    env, tc = run.env, run.tc
    if tc.batch_size % env.world_size:
        raise ConfigError(f"{run.source}: optim.batch_size {tc.batch_size} is not divisible by {env.world_size} "
                          "processes")
    run.heads.to(env.device)
    optimizer = _optimizer(run.heads, tc)
    scheduler = tc.scheduler(optimizer)
    ckpt = _resume(run.out_dir / CHECKPOINT, run.fingerprint, run.heads, optimizer, scheduler)
    history: List[dict] = list(ckpt["history"]) if ckpt else []
    start = int(ckpt["epoch"]) if ckpt else 0
    state = {"frozen_check": ckpt["frozen_check"] if ckpt else "not run",
             "best_hits": dict(ckpt.get("best_hits") or {}) if ckpt else {}}
    model, layers = _distributed(run.heads, env), list(run.heads.heads)
    train_loader, val_loader, sampler, generator = _loaders(run)
    for epoch in range(start, tc.epochs):
        torch.manual_seed(_epoch_seed(tc.seed, epoch))  # augmentation in the main process
        generator.manual_seed(_epoch_seed(tc.seed, epoch))  # shuffling and the workers' seeds
        if sampler is not None:
            sampler.set_epoch(epoch)
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        run.backbone.eval()
        model.train()
        with run.stage("train"):
            row.update(_train_epoch(run, model, layers, train_loader, optimizer, epoch))
        scheduler.step()
        if epoch == start:  # moco: sanity_check() after the first epoch
            check_frozen(run.backbone, run.reference, f"{run.source}, after epoch {epoch + 1}")
            state["frozen_check"] = f"passed after epoch {epoch + 1}"
        if tc.validates(epoch + 1):
            with run.stage("val"):
                acc = evaluate(run.extract, run.heads, val_loader, env, tc, run.num_classes)
            for n in layers:
                row[f"{n}_top1"], row[f"{n}_top5"] = acc[n]["top1"], acc[n]["top5"]
            _keep_best_hits(state["best_hits"], acc, epoch + 1)
        history.append(row)
        _checkpoint(run, epoch, optimizer, scheduler, history, state, row)
    check_frozen(run.backbone, run.reference, f"{run.source}, at the end of training")
    summary = summarize(history, layers)
    hits = {n: np.unpackbits(b["hits"].numpy(), count=b["n"]).astype(bool) for n, b in state["best_hits"].items()
            if n in summary and b["epoch"] == summary[n]["best_epoch"]}
    return {"summary": summary, "history": history, "resumed_from": start if ckpt else None,
            "frozen_check": state["frozen_check"], "hits": hits}


def _checkpoint(run: LinearRun, epoch: int, optimizer, scheduler, history: List[dict], state: dict,
                row: dict) -> None:
    """Rank 0 writes the resumable state (atomically), the CSV log and one log line per epoch."""
    if not run.env.is_main:
        return
    atomic_torch_save(run.out_dir / CHECKPOINT, {
        "epoch": epoch + 1, "heads": run.heads.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "history": history, "fingerprint": run.fingerprint,
        "frozen_check": state["frozen_check"], "best_hits": state["best_hits"]})
    _write_log(run.out_dir / "log.csv", history)
    log.info("epoch %d/%d %s", epoch + 1, run.tc.epochs,
             " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))
