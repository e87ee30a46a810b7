"""Checkpoints in the official MoCo layout, plus what an exact resume needs.

``checkpoint_{epoch:04d}.pth.tar`` (0-based epoch in the name, the number of finished epochs in ``epoch``) holds
``epoch``, ``arch``, ``state_dict`` (keys under ``module.``, as DistributedDataParallel names them in
facebookresearch/moco's main_moco.py) and ``optimizer``: every tool that reads the official checkpoints reads
these. Resuming also restores ``scheduler``, the per-rank RNG states (``rng``) and checks ``config``.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from moco_bench.core.atomic import atomic_torch_save
from moco_bench.core.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)
PATTERN = re.compile(r"checkpoint_(\d{4,})\.pth\.tar$")


def checkpoint_name(epoch_index: int) -> str:
    return f"checkpoint_{epoch_index:04d}.pth.tar"


def _epoch_checkpoints(out_dir: Path) -> List[Tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in Path(out_dir).glob("checkpoint_*.pth.tar") if (m := PATTERN.match(p.name))]
    return sorted(found)


def latest_checkpoint(out_dir: Path) -> Optional[Path]:
    """The checkpoint of the last finished epoch in ``out_dir``, or None."""
    found = _epoch_checkpoints(out_dir)
    return found[-1][1] if found else None


class UnreadableCheckpoint(CheckpointError):
    """The file does not read as a checkpoint at all (a write cut short, another kind of file)."""


def latest_readable(out_dir: Path, cfg_model) -> Tuple[Optional[Path], Optional[Dict[str, Any]]]:
    """The newest checkpoint in ``out_dir`` that reads, loaded (``resume=auto``); a newer one that does not read
    (a write cut short by a crash) is named in a warning and skipped. (None, None) when there is none at all."""
    found = [p for _, p in reversed(_epoch_checkpoints(out_dir))]
    for path in found:
        try:
            return path, load_for_resume(path, cfg_model)
        except UnreadableCheckpoint as e:
            log.warning("%s; resuming from the checkpoint before it (this file is kept, and replaced when its "
                        "epoch is saved again)", e)
    if found:
        raise CheckpointError(f"{out_dir}: none of its {len(found)} checkpoints reads ({found[0].name} ... "
                              f"{found[-1].name}); move them away to start afresh, or pass resume=<a good copy>")
    return None, None


def sweep_temporaries(out_dir: Path) -> None:
    """Remove the temporaries of checkpoint writes that were cut short (the run that owns ``out_dir`` is this
    one: none of them can still be written)."""
    for tmp in Path(out_dir).glob(".checkpoint_*.pth.tar.*.tmp"):
        log.warning("%s: removing %s, left by an interrupted checkpoint write", out_dir, tmp.name)
        tmp.unlink(missing_ok=True)


def prune(out_dir: Path, keep: Optional[int]) -> None:
    """Delete all but the ``keep`` newest epoch checkpoints (None keeps all, as main_moco.py does)."""
    if keep is None:
        return
    for _, path in _epoch_checkpoints(out_dir)[:-keep]:
        path.unlink()


def rng_state() -> Dict[str, Any]:
    """This process's random generators (the augmentations, the key shuffle and the loader seeds use them)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save(path: Path, *, epoch: int, arch: str, model: torch.nn.Module, optimizer, scheduler, scaler=None,
         rng: List[Dict[str, Any]], config: dict) -> None:
    """Write a checkpoint atomically: an interrupted write leaves the previous checkpoints intact. ``scaler``: the
    fp16 gradient scaler, whose scale a resumed run continues from."""
    state = {
        "epoch": epoch,
        "arch": arch,
        "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng,
        "config": config,
    }
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    atomic_torch_save(Path(path), state)


def load_for_resume(path: Path, cfg_model) -> Dict[str, Any]:
    """Read a checkpoint to resume from and check that it fits the config, before any compute is spent."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: resume checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise UnreadableCheckpoint(f"{path}: not a readable checkpoint ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0] if str(e) else ''})") from None
    keys = set(ckpt) if isinstance(ckpt, dict) else set()
    missing = {"epoch", "arch", "state_dict", "optimizer", "scheduler", "rng"} - keys
    if missing:
        raise CheckpointError(f"{path}: not a moco-bench pretraining checkpoint (missing {sorted(missing)})")
    if ckpt["arch"] != cfg_model.arch:
        raise ConfigError(f"{path}: checkpoint is a {ckpt['arch']}, the config asks for model.arch={cfg_model.arch}")
    queue = ckpt["state_dict"].get("module.queue")
    if queue is None or tuple(queue.shape) != (cfg_model.dim, cfg_model.K):
        shape = None if queue is None else tuple(queue.shape)
        raise ConfigError(f"{path}: queue of shape {shape}, the config asks for (dim, K)=({cfg_model.dim}, "
                          f"{cfg_model.K})")
    return ckpt


def restore(ckpt: Dict[str, Any], path: Path, *, model, optimizer, scheduler, scaler=None, rank: int,
            world_size: int) -> int:
    """Load model (both encoders, queue and pointer), optimizer, scheduler, fp16 scaler and RNG; return the next
    epoch."""
    state = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
    try:
        model.load_state_dict(state)
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: does not match the configured model: {e}") from None
    scheduler.load_state_dict(ckpt["scheduler"])
    if scheduler.last_epoch < int(ckpt["epoch"]):  # saved at the finished epoch's lr (older moco-bench files
        scheduler.step()                           # were saved after this step): on to the next epoch's lr
    if scaler is not None and "scaler" in ckpt:
        scaler.load_state_dict(ckpt["scaler"])
    if len(ckpt["rng"]) == world_size:
        set_rng_state(ckpt["rng"][rank])
    else:
        log.warning("%s was written by %d processes, this run has %d: random streams are not restored, so the "
                    "run continues correctly but not bit for bit", path, len(ckpt["rng"]), world_size)
    return int(ckpt["epoch"])
