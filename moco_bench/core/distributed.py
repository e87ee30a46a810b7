"""Process group set-up and the collectives MoCo needs: key gathering and shuffle BN across ranks.

One process per device. torchrun (and the SLURM launcher, through submitit) sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; without them the run is a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from moco_bench.core.env import strict_fp32
from moco_bench.core.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False  # setup() joined the group, so teardown() leaves it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> DistEnv:
    """Join the process group described by the environment (NCCL on GPU, gloo on CPU) and pick the device.

    ``device``: ``auto`` (``cuda:<LOCAL_RANK>`` when CUDA is available, else ``cpu``), ``cpu``, ``cuda`` or
    ``cuda:N`` (one process: that GPU; several: each process its ``LOCAL_RANK``).
    """
    kind, _, index = str(device).partition(":")
    if kind not in ("auto", "cpu", "cuda") or (index and not index.isdigit()):
        raise ConfigError(f"device {device!r}: expected auto, cpu, cuda or cuda:N")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for, but CUDA is not available here")
    use_cuda = kind == "cuda" or (kind == "auto" and torch.cuda.is_available())
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    gpu = local_rank if world_size > 1 or not index else int(index)
    dev = torch.device("cuda", gpu) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
        strict_fp32()
    owns_group = world_size > 1 and not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if use_cuda else "gloo", init_method="env://")
    return DistEnv(rank, world_size, local_rank, dev, owns_group)


def teardown(env: DistEnv) -> None:
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def process_rank() -> int:
    """This process's rank: the process group's when joined, else torchrun's ``RANK`` (0 when alone)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", 0))


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@torch.no_grad()
def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` (equal shapes) concatenated in rank order; no gradient flows through it."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def shuffle_across_ranks(x: torch.Tensor):
    """Shuffle BN, first half: deal the global key batch to the ranks in a random order.

    Rank 0's permutation is broadcast so that all ranks agree. Each rank's BN then normalizes keys that came
    from several ranks, so a query and its key never share BN statistics (MoCo paper, section 3.3).
    Returns this rank's shuffled slice and the inverse permutation for :func:`unshuffle_across_ranks`.
    """
    gathered = concat_all_gather(x)
    perm = torch.randperm(gathered.shape[0], device=x.device)
    dist.broadcast(perm, src=0)
    mine = perm.view(dist.get_world_size(), -1)[dist.get_rank()]
    return gathered[mine], torch.argsort(perm)


@torch.no_grad()
def unshuffle_across_ranks(x: torch.Tensor, idx_unshuffle: torch.Tensor) -> torch.Tensor:
    """Shuffle BN, second half: give each rank back the encodings of its own images, in their order."""
    gathered = concat_all_gather(x)
    return gathered[idx_unshuffle.view(dist.get_world_size(), -1)[dist.get_rank()]]


def all_finite(loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every rank, so that all ranks stop together instead of hanging."""
    ok = torch.isfinite(loss.detach()).all().to(torch.int32)
    if world_size() > 1:
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok)
