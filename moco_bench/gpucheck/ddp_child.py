"""gpu-check's torchrun child: joins the process group (NCCL on a GPU, gloo in the CPU smoke run) and runs the
suite's collectives, a DDP MoCo step and multi-head linear steps with SyncBN heads; prints one JSON line."""

from __future__ import annotations

import argparse
import json
import math
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from moco_bench.core import distributed
from moco_bench.gpucheck.devices import CHILD_TAG


def _collectives(device) -> list:
    x = torch.arange(12.0, device=device).view(6, 2)
    gathered = distributed.concat_all_gather(x)
    shuffled, idx = distributed.shuffle_across_ranks(x)
    back = distributed.unshuffle_across_ranks(shuffled, idx)
    return [("all-gather", torch.equal(gathered, x), "", "concat_all_gather of one rank is the tensor"),
            ("shuffle BN", torch.equal(back, x), "", "unshuffle(shuffle(x)) == x across ranks")]


def _moco_step(device, batch: int, size: int, arch: str) -> tuple:
    from moco_bench.models.moco import MoCo

    moco = MoCo(arch, dim=128, K=4096, m=0.999, T=0.2, mlp=True).to(device)
    model = DistributedDataParallel(moco, device_ids=[device] if device.type == "cuda" else None,
                                    forward_sync_buffers=False)
    optimizer = torch.optim.SGD(model.parameters(), 0.03, momentum=0.9)
    images = [torch.randn(batch, 3, size, size, device=device) for _ in range(2)]
    with torch.autocast(device.type, dtype=torch.bfloat16):
        logits, labels = model(*images)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    loss.backward()
    optimizer.step()
    ok = math.isfinite(loss.item()) and int(moco.queue_ptr) == batch
    return ("DDP MoCo v2 step bf16", ok, f"loss {loss.item():.3f}", f"batch {batch} at {size} px; queue advanced")


def _linear_steps(device) -> tuple:
    from moco_bench.evaluators.linear.heads import norm_linear_heads

    layers = ["feature1", "feature5"]
    heads = norm_linear_heads(layers, {"feature1": 64 * 36, "feature5": 2048}, {"feature1": 64, "feature5": 2048},
                              1000, affine=False, momentum=0.1, eps=1e-5, init_std=0.01).to(device)
    if device.type == "cuda":
        heads = torch.nn.SyncBatchNorm.convert_sync_batchnorm(heads)
    synced = any(isinstance(m, torch.nn.SyncBatchNorm) for m in heads.modules())
    model = DistributedDataParallel(heads, device_ids=[device] if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(model.parameters(), 0.01, momentum=0.9)
    losses = []
    for _ in range(5):
        feats = {"feature1": torch.randn(64, 64 * 36, device=device), "feature5": torch.randn(64, 2048, device=device)}
        target = torch.randint(0, 1000, (64,), device=device)
        loss = sum(torch.nn.functional.cross_entropy(v, target) for v in model(feats).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    ok = all(math.isfinite(v) for v in losses) and (synced or device.type == "cpu")
    return ("multi-head linear, SyncBN heads", ok, f"loss {losses[-1]:.2f}",
            f"5 steps; BN {'SyncBatchNorm' if synced else 'BatchNorm (CPU)'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--arch", required=True)
    args = ap.parse_args()
    cuda = os.environ.get("GPUCHECK_DEVICE") == "cuda"
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        rows = _collectives(device) + [_moco_step(device, args.batch, args.size, args.arch), _linear_steps(device)]
        rows = [(name, bool(ok), fig, detail) for name, ok, fig, detail in rows]
        print(CHILD_TAG + json.dumps({"backend": dist.get_backend(), "rows": rows}), flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
