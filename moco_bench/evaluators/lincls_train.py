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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

from moco_bench.errors import ConfigError, TrainingDiverged
from moco_bench.evaluators.heads import Heads
from moco_bench.results.atomic import atomic_write_bytes, atomic_write_text

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
    seed: int = 0
    val_every: int = 1
    amp: bool = False
    channels_last: bool = False

    @classmethod
    def from_config(cls, cfg) -> "TrainConfig":
        o, s = cfg.optim, cfg.schedule
        source = cfg.get("_source_", "config")
        if o.lr_scaling not in ("none", "linear"):
            raise ConfigError(f"{source}: optim.lr_scaling {o.lr_scaling!r}: expected none or linear")
        if int(s.epochs) < 1 or int(s.val_every) < 1 or int(o.batch_size) < 1:
            raise ConfigError(f"{source}: schedule.epochs, schedule.val_every and optim.batch_size must be >= 1")
        lr = float(o.lr) * (float(o.batch_size) / float(o.base_batch) if o.lr_scaling == "linear" else 1.0)
        return cls(epochs=int(s.epochs), milestones=[int(m) for m in s.milestones], gamma=float(s.gamma), lr=lr,
                   batch_size=int(o.batch_size), momentum=float(o.momentum), weight_decay=float(o.weight_decay),
                   norm_weight_decay=float(o.norm_weight_decay), nesterov=bool(o.nesterov), seed=int(cfg.seed),
                   val_every=int(s.val_every), amp=bool(cfg.amp), channels_last=bool(cfg.channels_last))


@dataclass
class DistInfo:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info(device: str) -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (gloo on CPU, NCCL on GPU)."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        from moco_bench.pretrain import distributed

        env = distributed.setup("cuda" if str(device).startswith("cuda") else "cpu")
        return DistInfo(env.rank, env.world_size, env.device)
    return DistInfo(0, 1, torch.device(device))


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


@torch.no_grad()
def evaluate(extract: Callable, heads: nn.Module, loader: DataLoader, di: DistInfo, tc: TrainConfig,
             num_classes: int) -> Dict[str, Dict[str, float]]:
    """Top-1 / top-5 (%) per head over the whole loader (summed over ranks)."""
    heads.eval()
    counts: Optional[torch.Tensor] = None
    names: List[str] = []
    k = min(5, num_classes)
    for x, y in tqdm(loader, desc="val", leave=False, disable=not di.is_main):
        x, y = _to(x, di.device, tc.channels_last), y.to(di.device)
        with torch.autocast(di.device.type, dtype=_amp_dtype(di.device), enabled=tc.amp):
            feats = extract(x)
        logits = heads({n: f.float() for n, f in feats.items()})
        names = list(logits)
        if counts is None:
            counts = torch.zeros(len(names), 3, dtype=torch.float64, device=di.device)
        for i, name in enumerate(names):
            top = logits[name].topk(k, dim=1).indices
            hit = top.eq(y[:, None])
            counts[i, 0] += hit[:, 0].sum()
            counts[i, 1] += hit.any(dim=1).sum()
            counts[i, 2] += y.numel()
    if di.world_size > 1:
        dist.all_reduce(counts)
    return {n: {"top1": float(100 * c[0] / c[2]), "top5": float(100 * c[1] / c[2])} for n, c in zip(names, counts)}


def _amp_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cpu" else torch.float16


def _save(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


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


def _loaders(train_set: Dataset, val_set: Dataset, per_rank: int, di: DistInfo, workers: int, seed: int):
    """Train loader (shuffled by ``generator``, or a DistributedSampler) and this rank's share of val."""
    generator = torch.Generator()
    sampler = None
    if di.world_size > 1:
        sampler = DistributedSampler(train_set, num_replicas=di.world_size, rank=di.rank, shuffle=True, seed=seed)
        val_set = Subset(val_set, range(di.rank, len(val_set), di.world_size))
    pin = di.device.type == "cuda"
    train = DataLoader(train_set, batch_size=per_rank, shuffle=sampler is None, sampler=sampler,
                       num_workers=workers, generator=generator, pin_memory=pin)
    val = DataLoader(val_set, batch_size=per_rank, shuffle=False, num_workers=workers, pin_memory=pin)
    return train, val, sampler, generator


def _train_epoch(extract, model, layers, loader, optimizer, tc: TrainConfig, di: DistInfo, epoch: int,
                 source: str) -> Dict[str, float]:
    """One pass over ``loader``; returns the mean loss per head (over all ranks)."""
    lr = optimizer.param_groups[0]["lr"]
    loss_sum = torch.zeros(len(layers) + 1, dtype=torch.float64, device=di.device)  # per head, then the count
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{tc.epochs}", leave=False, disable=not di.is_main)
    for step, (x, y) in enumerate(bar, start=1):
        x, y = _to(x, di.device, tc.channels_last), y.to(di.device, non_blocking=True)
        with torch.no_grad(), torch.autocast(di.device.type, dtype=_amp_dtype(di.device), enabled=tc.amp):
            feats = extract(x)
        logits = model({n: f.float() for n, f in feats.items()})
        losses = torch.stack([F.cross_entropy(logits[n], y) for n in layers])
        loss = losses.sum()
        if not _all_finite(loss, di):
            raise TrainingDiverged(
                f"{source}: the loss became {loss.item()} at epoch {epoch + 1}/{tc.epochs}, step {step}/{len(loader)} "
                f"(lr {lr:g}); lower optim.lr or check the backbone's weights")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum[:-1] += losses.detach().double() * y.numel()
        loss_sum[-1] += y.numel()
    if di.world_size > 1:
        dist.all_reduce(loss_sum)
    return {f"{n}_loss": float(loss_sum[i] / loss_sum[-1]) for i, n in enumerate(layers)}


def train_heads(*, extract: Callable, heads: Heads, backbone: nn.Module, reference: Mapping[str, torch.Tensor],
                train_set: Dataset, val_set: Dataset, tc: TrainConfig, num_classes: int, out_dir: Path,
                di: DistInfo, workers: int, fingerprint: str, source: str,
                stage: Callable = lambda name: contextlib.nullcontext()) -> dict:
    """Train ``heads`` on ``extract(images)`` (a ``{layer: features}`` dict) and evaluate them each epoch.

    Returns ``{"summary": summarize(...), "history": [...], "resumed_from": epoch or None, "frozen_check": text}``.
    Raises :class:`TrainingDiverged` on a non-finite loss and :class:`BackboneChanged` when the backbone moved.
    """
    out_dir = Path(out_dir)
    if tc.batch_size % di.world_size:
        raise ConfigError(f"{source}: optim.batch_size {tc.batch_size} is not divisible by {di.world_size} processes")
    heads.to(di.device)
    optimizer = _optimizer(heads, tc)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=tc.milestones, gamma=tc.gamma)
    ckpt = _resume(out_dir / CHECKPOINT, fingerprint, heads, optimizer, scheduler)
    history: List[dict] = list(ckpt["history"]) if ckpt else []
    start = int(ckpt["epoch"]) if ckpt else 0
    frozen_check = ckpt["frozen_check"] if ckpt else "not run"
    model = heads
    if di.world_size > 1:
        if di.device.type == "cuda":  # synchronized head BN, as mmselfsup's SyncBN; CPU keeps per-rank statistics
            model = nn.SyncBatchNorm.convert_sync_batchnorm(heads)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[di.device] if di.device.type == "cuda" else None)
    train_loader, val_loader, sampler, generator = _loaders(train_set, val_set, tc.batch_size // di.world_size, di,
                                                            workers, tc.seed)
    layers = list(heads.heads)
    for epoch in range(start, tc.epochs):
        torch.manual_seed(_epoch_seed(tc.seed, epoch))  # augmentation in the main process
        generator.manual_seed(_epoch_seed(tc.seed, epoch))  # shuffling and the workers' seeds
        if sampler is not None:
            sampler.set_epoch(epoch)
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        backbone.eval()
        model.train()
        with stage("train"):
            row.update(_train_epoch(extract, model, layers, train_loader, optimizer, tc, di, epoch, source))
        scheduler.step()
        if epoch == start:  # moco: sanity_check() after the first epoch
            check_frozen(backbone, reference, f"{source}, after epoch {epoch + 1}")
            frozen_check = f"passed after epoch {epoch + 1}"
        if (epoch + 1) % tc.val_every == 0 or epoch + 1 == tc.epochs:
            with stage("val"):
                acc = evaluate(extract, heads, val_loader, di, tc, num_classes)
            for n in layers:
                row[f"{n}_top1"], row[f"{n}_top5"] = acc[n]["top1"], acc[n]["top5"]
        history.append(row)
        if di.is_main:
            _save(out_dir / CHECKPOINT, {
                "epoch": epoch + 1, "heads": heads.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "history": history, "fingerprint": fingerprint,
                "frozen_check": frozen_check})
            _write_log(out_dir / "log.csv", history)
            log.info("epoch %d/%d %s", epoch + 1, tc.epochs,
                     " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))
    check_frozen(backbone, reference, f"{source}, at the end of training")
    return {"summary": summarize(history, layers), "history": history,
            "resumed_from": start if ckpt else None, "frozen_check": frozen_check}


def _all_finite(loss: torch.Tensor, di: DistInfo) -> bool:
    ok = torch.isfinite(loss.detach()).to(torch.int32)
    if di.world_size > 1:
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok)
