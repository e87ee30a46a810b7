"""The checks of ``moco-bench gpu-check``: each runs the suite's own code on the device and returns table rows.

``Context.smoke`` (``--cpu-smoke``, for the test suite) runs every check at toy size on the CPU, so that the
script's own code is exercised where no GPU is; the GPU-only parts (nvjpeg, faiss-gpu, detectron2's fp16 AMP)
then report SKIP.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List

import torch

from moco_bench.core.distributed import DistEnv
from moco_bench.core.env import strict_fp32
from moco_bench.core.paths import project_file

RECIPE = "pretrain/mocov2_r50_in1k_200ep.yaml"


@dataclass
class Row:
    check: str
    status: str  # PASS, FAIL, SKIP or INFO
    figure: str
    detail: str = ""


@dataclass
class Context:
    device: torch.device
    batch: int  # MoCo batch
    steps: int  # timed steps per setting
    size: int  # image side
    arch: str  # resnet50; resnet18 in the smoke run
    smoke: bool
    tmp: Path
    found: Dict[str, float]  # figures later checks compare with (images/s of the MoCo steps)

    @classmethod
    def make(cls, args, tmp: Path) -> "Context":
        if args.cpu_smoke:
            return cls(torch.device("cpu"), 16, 2, 32, "resnet18", True, tmp, {})
        device = torch.device(args.device)
        torch.cuda.set_device(device)
        strict_fp32()
        return cls(device, args.batch, args.steps, 224, "resnet50", False, tmp, {})

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def guarded(name: str, fn: Callable[..., List[Row]], *args) -> List[Row]:
    """``fn(*args)``'s rows, or one FAIL row naming the error and where it was raised: the other checks still run."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - a failing check is a table row
        where = traceback.extract_tb(e.__traceback__)[-1]
        return [Row(name, "FAIL", "", f"{type(e).__name__}: {e} ({Path(where.filename).name}:{where.lineno})")]


def timed(ctx: Context, fn: Callable[..., object], *args, repeats: int = 1, **kwargs):
    """``(seconds per call, last result)`` of ``fn(*args, **kwargs)`` after one warm-up call, the device
    synchronized around the timing."""
    fn(*args, **kwargs)
    ctx.sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        result = fn(*args, **kwargs)
    ctx.sync()
    return (time.perf_counter() - t0) / repeats, result


def env_of(ctx: Context) -> DistEnv:
    return DistEnv(rank=0, world_size=1, local_rank=0, device=ctx.device)


def recipe(ctx: Context, *overrides: str):
    """The MoCo v2 recipe (R50; R18 in the smoke run) at this check's batch, one GPU holding the recipe's 8
    shuffle-BN groups."""
    from moco_bench.pretrain.schema import load_recipe

    return load_recipe(project_file(RECIPE), [f"data.batch_size={ctx.batch}", f"model.arch={ctx.arch}",
                                              "cpu_threads=null", *overrides])


def finite(value: float) -> bool:
    return isinstance(value, float) and math.isfinite(value)
