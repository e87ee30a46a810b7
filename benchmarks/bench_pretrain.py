"""MoCo's own per-step cost (``make bench``): queue, momentum update, key shuffle and gather, beyond the encoders.

A full MoCo training step (``MoCo.forward`` + cross-entropy + backward + SGD step) is timed against the same
encoders doing only their own passes: the query encoder forward and backward, the key encoder forward, an
in-batch loss and the SGD step; no queue, no momentum update, no shuffle, one BN batch. The difference, as a
share of the full step, is MoCo's overhead. Target: under 10 %. Exits 1 when missed.

Defaults are the demo recipe's shapes (ResNet-18 with the v2 head, 32 px, batch 128, K 4096, 4 BN groups), the
configuration this CPU machine trains; ``--world-size 2`` runs both steps in two gloo processes with DDP, so the
key gather and the cross-rank shuffle are in the full step and DDP's gradient all-reduce in both. Times are
medians over ``--steps`` alternating steps after ``--warmup``, so a busy shared machine skews the two alike.
Usage: ``python benchmarks/bench_pretrain.py [--arch resnet18 --size 32 --batch 128 --K 4096 --steps 12]``.

``--whole-step`` times instead the demo recipe's whole training step, data included (the next batch from its
loader, the views, forward, backward, SGD), on the embedded Fashion-MNIST, for the old pipeline (image-by-image
tensor augmentation in the step, fp32, NCHW: the demo recipe before issue 30) and the new one (the batched
pipeline, ``data.pipeline=batched``, the shipped recipe's), in alternating blocks of ``--steps`` steps after 2
untimed ones (a worker's prefetched batches), and prints images/s of each and their ratio. ``--old`` / ``--new``
add overrides (``key=value``) to either. Target: new >= 3x old. Exits 1 when missed.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from moco_bench.core import distributed  # noqa: E402
from moco_bench.models.moco import MoCo  # noqa: E402

TARGET = 0.10
WHOLE_STEP_TARGET = 3.0  # issue 30: the new pipeline's whole step, data included, against the old one's
DEMO = REPO / "pretrain" / "mocov2_demo_fmnist.yaml"
OLD_PIPELINE = ["data.pipeline=tensor", "compute.precision=fp32", "compute.channels_last=false"]
NEW_PIPELINE = ["data.pipeline=batched"]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def measure(args, rank: int = 0, world_size: int = 1) -> dict:
    device = torch.device("cuda", rank) if torch.cuda.is_available() else torch.device("cpu")
    # Two identical models (DDP hooks belong to one wrapper each): one trains as MoCo, one as bare encoders.
    moco, bare = (MoCo(args.arch, dim=128, K=args.K, m=0.99, T=0.2, mlp=True, bn_splits=args.bn_splits)
                  .to(device).train() for _ in range(2))
    per_rank = args.batch // world_size
    im_q, im_k = (torch.randn(per_rank, 3, args.size, args.size, device=device) for _ in range(2))
    full_model = DistributedDataParallel(moco, forward_sync_buffers=False) if world_size > 1 else moco
    base_q = DistributedDataParallel(bare.encoder_q) if world_size > 1 else bare.encoder_q
    opt_full = torch.optim.SGD(full_model.parameters(), 0.01, momentum=0.9, weight_decay=1e-4)
    opt_base = torch.optim.SGD(base_q.parameters(), 0.01, momentum=0.9, weight_decay=1e-4)

    def full_step():
        logits, labels = full_model(im_q, im_k)
        loss = F.cross_entropy(logits, labels)
        opt_full.zero_grad(set_to_none=True)
        loss.backward()
        opt_full.step()

    def encoders_step():
        q = F.normalize(base_q(im_q), dim=1)
        with torch.no_grad():
            k = F.normalize(bare.encoder_k(im_k), dim=1)
        loss = F.cross_entropy(q @ k.T / moco.T, torch.arange(len(q), device=device))
        opt_base.zero_grad(set_to_none=True)
        loss.backward()
        opt_base.step()

    for _ in range(args.warmup):
        full_step()
        encoders_step()
    full, base = [], []
    for _ in range(args.steps):
        full.append(timed(full_step))
        base.append(timed(encoders_step))
    parts = {}
    if world_size == 1:  # MoCo's own pieces, alone
        keys = F.normalize(torch.randn(per_rank, 128, device=device), dim=1)
        parts = {"momentum update": statistics.median(timed(moco.momentum_update) for _ in range(args.steps)),
                 "enqueue": statistics.median(timed(lambda: moco.enqueue(keys)) for _ in range(args.steps))}
    return {"full": statistics.median(full), "encoders": statistics.median(base), "parts": parts}


def _rank(rank: int, world_size: int, port: int, args, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(args.threads)
    env = distributed.setup("auto")
    try:
        result = measure(args, rank, world_size)
        if rank == 0:
            torch.save(result, out)
    finally:
        distributed.teardown(env)


class Pipeline:
    """One recipe's loader, views and MoCo step, built by the pretraining code itself."""

    def __init__(self, overrides, out: Path, env):
        from moco_bench.pretrain.compute import step_compute
        from moco_bench.pretrain.data import build_dataset, build_loader
        from moco_bench.pretrain.schema import load_recipe
        from moco_bench.pretrain.train import build_training

        self.cfg = load_recipe(DEMO, [f"output_dir={out}", *overrides])
        torch.manual_seed(self.cfg.seed)
        self.moco, self.model, self.optimizer, _ = build_training(self.cfg, env)
        self.compute = step_compute(self.cfg, env.device)
        self.loader = build_loader(self.cfg, build_dataset(self.cfg), env)
        self.batches, self.env = iter(self.loader), env

    def describe(self) -> str:
        c = self.cfg
        return (f"{c.model.arch}, data.pipeline {c.data.pipeline}, {c.compute.precision}, "
                f"{'channels_last' if c.compute.channels_last else 'NCHW'}")

    def step(self) -> float:
        """Seconds of one whole step: waiting for the batch, the views, forward, backward and update."""
        t0 = time.perf_counter()
        images, _ = next(self.batches)
        im_q, im_k = self.compute.inputs(images, self.env.device)
        with self.compute.autocast(self.env.device):
            logits, labels = self.model(im_q, im_k)
            loss = F.cross_entropy(logits, labels)
        self.compute.step(loss, self.optimizer)
        loss.item()
        return time.perf_counter() - t0


def whole_step(args) -> int:
    """Old and new pipelines of the demo recipe in alternating blocks: images/s of each, and the ratio."""
    torch.set_num_threads(args.threads)
    env = distributed.setup("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        pipes = {"old": Pipeline(OLD_PIPELINE + args.old, Path(tmp) / "old", env),
                 "new": Pipeline(NEW_PIPELINE + args.new, Path(tmp) / "new", env)}
        times = {name: [] for name in pipes}
        for _ in range(2):  # two rounds: a load change on the shared machine touches both
            for name, pipe in pipes.items():
                for i in range(2 + args.steps):
                    seconds = pipe.step()
                    if i >= 2:
                        times[name].append(seconds)
    ips = {name: pipes[name].cfg.data.batch_size / statistics.median(t) for name, t in times.items()}
    print(f"whole MoCo step, data included (demo recipe, batch {pipes['new'].cfg.data.batch_size}, cpu x"
          f"{args.threads} thread(s), median of {2 * args.steps} steps each)")
    for name, pipe in pipes.items():
        print(f"  {name}: {ips[name]:7.1f} images/s  ({pipe.describe()})")
    ratio = ips["new"] / ips["old"]
    ok = ratio >= WHOLE_STEP_TARGET
    print(f"  new / old: {ratio:.2f}x (target >= {WHOLE_STEP_TARGET:.0f}x): {'ok' if ok else 'MISSED'}")
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=128, help="global batch")
    p.add_argument("--K", type=int, default=4096)
    p.add_argument("--bn-splits", type=int, default=4, help="shuffle BN groups on one device")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="CPU intra-op threads per process (the demo uses 2)")
    p.add_argument("--world-size", type=int, default=1, help="gloo/NCCL processes on this machine")
    p.add_argument("--whole-step", action="store_true", help="time the demo's whole step, old and new pipelines")
    p.add_argument("--old", nargs="*", default=[], metavar="KEY=VALUE", help="--whole-step: overrides of the old")
    p.add_argument("--new", nargs="*", default=[], metavar="KEY=VALUE", help="--whole-step: overrides of the new")
    args = p.parse_args()
    if args.whole_step:
        return whole_step(args)
    if args.world_size == 1:
        torch.set_num_threads(args.threads)
        result = measure(args)
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / "result.pt")
            mp.spawn(_rank, args=(args.world_size, port, args, out), nprocs=args.world_size, join=True)
            result = torch.load(out, weights_only=True)
    overhead = (result["full"] - result["encoders"]) / result["full"]
    device = "cuda" if torch.cuda.is_available() else f"cpu x{args.threads} thread(s)"
    print(f"MoCo step overhead, {args.arch} {args.size}px batch {args.batch} K {args.K} world {args.world_size} "
          f"({device}, median of {args.steps} steps)")
    print(f"  full MoCo step      {result['full'] * 1e3:9.1f} ms")
    print(f"  encoders' own step  {result['encoders'] * 1e3:9.1f} ms")
    for name, seconds in result["parts"].items():
        print(f"    {name:<17} {seconds * 1e3:9.2f} ms")
    ok = overhead < TARGET
    print(f"  overhead {100 * overhead:.1f} % of the step (target < {100 * TARGET:.0f} %): {'ok' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
