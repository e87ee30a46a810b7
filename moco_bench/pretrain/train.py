"""The MoCo pretraining loop (after facebookresearch/moco main_moco.py), with exact resume and up-front checks.

Everything that can be wrong with the input (queue size vs batch, dataset, resume checkpoint, monitor data) is
checked before the first step; a non-finite loss stops the run at once, naming the step and the last good
checkpoint, which is kept.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from moco_bench.core import distributed
from moco_bench.core.atomic import atomic_write_text, human_bytes
from moco_bench.core.config import differences, is_free, resolved, source_of
from moco_bench.core.env import available_memory
from moco_bench.core.errors import ConfigError, ResultExistsError, TrainingDiverged
from moco_bench.core.progress import bar
from moco_bench.models.moco import MoCo
from moco_bench.pretrain import checkpoint
from moco_bench.pretrain.compute import StepCompute, step_compute
from moco_bench.pretrain.data import AUGMENT_KEYS, build_dataset, build_loader
from moco_bench.pretrain.log import MetricLog
from moco_bench.pretrain.monitor import KnnMonitor
from moco_bench.pretrain.recipe import recipe_record

log = logging.getLogger(__name__)


def lr_factor(epoch: int, *, schedule: str, epochs: int, milestones) -> float:
    """main_moco.py's per-epoch schedule: half a cosine period (``--cos``) or x0.1 at each milestone."""
    if schedule == "cos":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    return 0.1 ** sum(epoch >= m for m in milestones)


def check_config(cfg: DictConfig, world_size: int) -> None:
    src, batch, K = source_of(cfg), cfg.data.batch_size, cfg.model.K
    if batch % world_size:
        raise ConfigError(f"{src}: data.batch_size={batch} (global) does not split over {world_size} processes")
    if K % batch:
        raise ConfigError(f"{src}: model.K={K} must be a multiple of the global batch data.batch_size={batch}: each "
                          "step replaces one batch of keys in the queue")
    if world_size == 1 and batch % cfg.model.bn_splits:
        raise ConfigError(f"{src}: data.batch_size={batch} is not a multiple of model.bn_splits={cfg.model.bn_splits}")
    missing = [k for k in AUGMENT_KEYS[cfg.transform.kind] if cfg.transform[k] is None]
    if missing:
        raise ConfigError(f"{src}: transform.kind {cfg.transform.kind} needs transform.{', transform.'.join(missing)}")


def check_memory(cfg: DictConfig, device: torch.device, world_size: int) -> None:
    """The queue, its copy in each step and one step's logits (with their gradient) must fit the device: a
    queue of 10^9 keys would otherwise end in an allocation traceback after the data is read."""
    dim, K, per_rank = int(cfg.model.dim), int(cfg.model.K), int(cfg.data.batch_size) // world_size
    queue, logits = 4 * dim * K, 4 * per_rank * (K + 1)
    need, have = 2 * queue + 3 * logits, available_memory(device)
    if have is not None and need > have:
        raise ConfigError(f"{source_of(cfg)}: model.K={K:,} with model.dim={dim}: the queue takes "
                          f"{human_bytes(queue)} and one step's logits {human_bytes(logits)} per process (about "
                          f"{human_bytes(need)} in all); {device} has {human_bytes(have)} available")


def resume_from(cfg: DictConfig, out_dir: Path):
    """``resume``: a checkpoint path, ``auto`` (the newest in ``output_dir`` that reads, if any) or null (a fresh
    run). Returns (path, loaded checkpoint) or (None, None)."""
    if cfg.resume == "auto":
        return checkpoint.latest_readable(out_dir, cfg.model)
    if cfg.resume:
        return Path(cfg.resume), checkpoint.load_for_resume(Path(cfg.resume), cfg.model)
    latest = checkpoint.latest_checkpoint(out_dir)
    if latest is not None:
        raise ResultExistsError(f"{out_dir} already holds {latest.name}: pass resume=auto to continue that run, "
                                "or choose another output_dir")
    return None, None


def build_monitor(cfg: DictConfig) -> Optional[KnnMonitor]:
    m = cfg.monitor
    if not m.knn_every:
        return None
    return KnnMonitor(resolved(m.data), resolved(m.test), k=m.k, T=m.T, mean=cfg.transform.mean,
                      std=cfg.transform.std, batch_size=m.batch_size, workers=cfg.data.workers)


def gather_rng(world_size: int) -> list:
    """Every rank's RNG state, in rank order (each rank draws its own augmentations)."""
    if world_size == 1:
        return [checkpoint.rng_state()]
    states = [None] * world_size
    dist.all_gather_object(states, checkpoint.rng_state())
    return states


def pretrain(cfg: DictConfig) -> Optional[Path]:
    """Train MoCo as ``cfg`` says; returns the last checkpoint written (on rank 0; None elsewhere)."""
    env = distributed.setup(cfg.device)
    if env.is_main:
        print(f"device: {env.device}" + (" (auto)" if cfg.device == "auto" else "")
              + (f", {env.world_size} processes" if env.world_size > 1 else ""), flush=True)
    if env.device.type == "cpu" and cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    try:
        return _pretrain(cfg, env)
    finally:
        distributed.teardown(env)


def preflight(cfg: DictConfig, world_size: int):
    """The checks that need no data: config numbers and the resume checkpoint. Returns (path, checkpoint) or
    (None, None); run again by each job, and before submitting one."""
    check_config(cfg, world_size)
    recipe_record(cfg)  # the shipped recipe it names exists
    resume, ckpt = resume_from(cfg, Path(cfg.output_dir))
    if ckpt is not None:
        check_same_run(cfg, ckpt, resume)
    return resume, ckpt


def check_same_run(cfg: DictConfig, ckpt: dict, path: Path) -> None:
    """A resumed run continues the one that wrote ``ckpt``: the optimizer and the schedule come back from the
    checkpoint, so a changed number (say optim.lr) would be recorded but never used. Only the recipe's free keys
    and a longer ``optim.epochs`` may differ."""
    saved = ckpt.get("config")
    if not isinstance(saved, dict):
        return
    free = {**dict(cfg.recipe.free_keys), "recipe": "", "optim.epochs": "", "_source_": ""}
    changed = {k: v for k, v in differences(saved, resolved(cfg)).items() if not is_free(k, free)}
    if changed:
        said = "; ".join(f"{k} {v['protocol']} -> {v['run']}" for k, v in list(changed.items())[:4])
        raise ConfigError(f"{path}: resuming continues the run that wrote it, but this config changes {said}; "
                          "resume with that run's values or start a new output_dir")


def build_training(cfg: DictConfig, env: distributed.DistEnv):
    """The MoCo module, the module the steps call (DDP across ranks), its SGD optimizer and the lr schedule."""
    mc = cfg.model
    bn_splits = mc.bn_splits if env.world_size == 1 else 1  # across ranks, each rank is one BN group
    moco = MoCo(mc.arch, dim=mc.dim, K=mc.K, m=mc.m, T=mc.T, mlp=mc.mlp, bn_splits=bn_splits).to(env.device)
    if cfg.compute.channels_last:
        moco.to(memory_format=torch.channels_last)
    model = moco
    if env.world_size > 1:
        # Buffers are synced once, here, not before every step as main_moco.py's DDP default does: the queue stays
        # identical on all ranks (keys are gathered) and only rank 0's BN statistics are saved, so the per-step
        # broadcast of the whole queue would change nothing.
        model = DistributedDataParallel(moco, device_ids=[env.device] if env.device.type == "cuda" else None,
                                        forward_sync_buffers=False)
    # All parameters, the key encoder's too (they get no gradient), as in main_moco.py: the optimizer state
    # then has the official checkpoint's layout.
    optimizer = torch.optim.SGD(model.parameters(), cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
        lr_factor, schedule=cfg.optim.schedule, epochs=cfg.optim.epochs, milestones=list(cfg.optim.milestones)))
    return moco, model, optimizer, scheduler


@dataclass
class Run:
    """Everything one pretraining run holds between epochs."""
    moco: MoCo
    model: nn.Module  # moco, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    compute: StepCompute
    loader: DataLoader
    config: dict  # resolved, with the recipe record: saved in every checkpoint
    logs: Optional[MetricLog] = None
    monitor: Optional[KnnMonitor] = None


def recorded_config(cfg: DictConfig) -> dict:
    """The resolved config with ``recipe`` replaced by the run's recipe record (the shipped recipe it derives
    from, the method and data of that file, and every deviation from it)."""
    config = resolved(cfg)
    config["recipe"] = recipe_record(cfg)
    return config


def _pretrain(cfg: DictConfig, env: distributed.DistEnv) -> Optional[Path]:
    resume, ckpt = preflight(cfg, env.world_size)
    check_memory(cfg, env.device, env.world_size)
    out_dir = Path(cfg.output_dir)
    if env.is_main and out_dir.is_dir():
        checkpoint.sweep_temporaries(out_dir)
    dataset = build_dataset(cfg)
    monitor = build_monitor(cfg)  # on every rank, so that a bad path stops them all (rank 0 alone uses it)
    random.seed(cfg.seed + env.rank)
    torch.manual_seed(cfg.seed + env.rank)
    run = Run(*build_training(cfg, env), step_compute(cfg, env.device), build_loader(cfg, dataset, env),
              recorded_config(cfg), monitor=monitor)
    start_epoch = 0
    if ckpt is not None:
        start_epoch = checkpoint.restore(ckpt, resume, model=run.moco, optimizer=run.optimizer,
                                         scheduler=run.scheduler, scaler=run.compute.scaler, rank=env.rank,
                                         world_size=env.world_size)
        log.info("resumed from %s at epoch %d", resume, start_epoch)
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(run.config)))
        run.logs = MetricLog(out_dir, cfg.log.tensorboard, start_epoch, start_epoch * len(run.loader))
        for key, change in run.config["recipe"]["deviations"].items():
            log.warning("off the published recipe (pretrain/%s.yaml): %s %s -> %s; results will say so",
                        run.config["recipe"]["protocol"], key, change["protocol"], change["run"])
    last = resume
    try:
        for epoch in range(start_epoch, cfg.optim.epochs):
            last = run_epoch(run, cfg, env, epoch, last)
    finally:
        if run.logs is not None:
            run.logs.close()
    return last if env.is_main else None


def run_epoch(run: Run, cfg: DictConfig, env: distributed.DistEnv, epoch: int, last: Optional[Path]):
    """One epoch, then (on rank 0) its log line, checkpoint and monitor; returns the newest checkpoint."""
    run.loader.sampler.set_epoch(epoch)
    stats = train_one_epoch(run.model, run.loader, run.optimizer, run.compute, epoch=epoch, env=env, logs=run.logs,
                            log_every=cfg.log.every, last_checkpoint=last)
    if env.is_main:  # one line per epoch, readable in a log file
        log.info("epoch %d/%d: loss %.3f, acc1 %.1f, lr %.4g, %.0f images/s", epoch + 1, cfg.optim.epochs,
                 stats["loss"], stats["acc1"], run.optimizer.param_groups[0]["lr"], stats["images_per_s"])
    rng = gather_rng(env.world_size)
    if env.is_main:  # saved before the schedule steps: the optimizer's lr is the epoch's own, as main_moco.py saves it
        last = Path(cfg.output_dir) / checkpoint.checkpoint_name(epoch)
        checkpoint.save(last, epoch=epoch + 1, arch=cfg.model.arch, model=run.moco, optimizer=run.optimizer,
                        scheduler=run.scheduler, scaler=run.compute.scaler, rng=rng, config=run.config)
        checkpoint.prune(Path(cfg.output_dir), cfg.keep_checkpoints)
    run.scheduler.step()
    if env.is_main and run.monitor is not None and (epoch + 1) % cfg.monitor.knn_every == 0:
        top1 = run.monitor(run.moco.encoder_q, env.device)
        run.logs.write("knn", (epoch + 1) * len(run.loader), {"epoch": epoch, "top1": top1})
        log.info(f"epoch {epoch}: kNN top-1 {top1:.2f} (k={cfg.monitor.k}, T={cfg.monitor.T})")
    if env.world_size > 1:
        dist.barrier()  # the others wait for rank 0's checkpoint and monitor
    return last


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer, compute: StepCompute, *, epoch: int, env,
                    logs: Optional[MetricLog], log_every: int, last_checkpoint: Optional[Path]) -> dict:
    """One epoch; returns its mean loss and (K+1)-way accuracy and its images per second (for the log line)."""
    model.train()
    criterion = nn.CrossEntropyLoss()
    steps, global_batch = len(loader), loader.batch_size * env.world_size
    progress = bar(loader, desc=f"epoch {epoch}", disable=not env.is_main, dynamic_ncols=True)
    tick, tick_step, start, sums = time.perf_counter(), 0, time.perf_counter(), torch.zeros(2)
    for i, (images, _) in enumerate(progress):
        im_q, im_k = compute.inputs(images, env.device)
        with compute.autocast(env.device):
            logits, labels = model(im_q, im_k)
            loss = criterion(logits, labels)
        if not distributed.all_finite(loss):
            kept = f"the last good checkpoint, {last_checkpoint}, is kept" if last_checkpoint else "no checkpoint yet"
            raise TrainingDiverged(f"loss is {loss.item()} at epoch {epoch}, step {i} (global step "
                                   f"{epoch * steps + i}); stopped before the update; {kept}")
        compute.step(loss, optimizer)
        acc1 = 100.0 * (logits.detach().argmax(1) == 0).float().mean().item()  # (K+1)-way: is the positive first?
        sums += torch.tensor([loss.item(), acc1])
        if logs is not None and (i % log_every == 0 or i == steps - 1):
            now = time.perf_counter()
            row = {"epoch": epoch, "loss": loss.item(), "acc1": acc1, "lr": optimizer.param_groups[0]["lr"],
                   "images_per_s": (i + 1 - tick_step) * global_batch / (now - tick)}
            tick, tick_step = now, i + 1
            logs.write("train", epoch * steps + i, row)
            progress.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.4g}",
                                 img_s=f"{row['images_per_s']:.0f}")
    return {"loss": float(sums[0]) / steps, "acc1": float(sums[1]) / steps,
            "images_per_s": steps * global_batch / (time.perf_counter() - start)}

