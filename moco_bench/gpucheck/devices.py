"""gpu-check: versions, torchrun with NCCL, feature extraction and the kNN search on the device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import List

import numpy as np
import torch

from moco_bench.gpucheck.checks import Context, Row, timed

CHILD_TAG = "GPUCHECK-DDP "  # the line of the torchrun child's JSON result


def versions(ctx: Context) -> List[Row]:
    from moco_bench.core.env import environment

    env = environment(str(ctx.device))
    libs = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    if not ctx.cuda:
        return [Row("versions", "INFO", f"torch {torch.__version__}", f"CPU smoke run; {libs}")]
    props = torch.cuda.get_device_properties(ctx.device)
    nccl = ".".join(map(str, torch.cuda.nccl.version()))
    return [Row("versions", "INFO", f"CUDA {torch.version.cuda}",
                f"{props.name}, {props.total_memory / 2**30:.0f} GiB, cuDNN {torch.backends.cudnn.version()}, "
                f"NCCL {nccl}, TF32 off (fp32 is fp32); {libs}")]


def ddp(ctx: Context) -> List[Row]:
    """torchrun, one process: the process group and the suite's collectives in a fresh interpreter."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
           "-m", "moco_bench.gpucheck.ddp_child", "--batch", str(min(ctx.batch, 32)), "--size", str(ctx.size),
           "--arch", ctx.arch]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "GPUCHECK_DEVICE": ctx.device.type})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(CHILD_TAG)]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return [Row("torchrun world size 1", "FAIL", f"exit {proc.returncode}", " | ".join(tail))]
    result = json.loads(lines[-1][len(CHILD_TAG):])
    return [Row(f"torchrun {result['backend']}: {name}", "PASS" if ok else "FAIL", figure, detail)
            for name, ok, figure, detail in result["rows"]]


def features(ctx: Context) -> List[Row]:
    """The suite's extraction (DataLoader, taps, row writer) of a random ResNet's GAP features, four settings; the
    device's fp32 features against the CPU's, and bf16 against fp32."""
    from torch.utils.data import TensorDataset

    from moco_bench.convert import load_backbone
    from moco_bench.evaluators.features import extract
    from moco_bench.models.taps import FeatureTaps

    n = 16 if ctx.smoke else 1024
    images = torch.randn(n, 3, ctx.size, ctx.size, generator=torch.Generator().manual_seed(0))
    dataset = TensorDataset(images, torch.zeros(n))
    backbone = load_backbone(f"random:{ctx.arch}")

    def run(device, precision, channels_last, rows=n) -> np.ndarray:
        taps = FeatureTaps(backbone.build_model(), ["gap"], {"gap": {"output_size": 1}})
        out = ctx.tmp / f"f-{device}-{precision}-{channels_last}.npy"
        data = dataset if rows == n else TensorDataset(images[:rows], torch.zeros(rows))
        extract(taps, data, {"gap": out}, images=[str(i) for i in range(rows)], batch_size=min(rows, 128),
                workers=2, device=str(device), precision=precision, channels_last=channels_last)
        return np.load(out)

    reference = run("cpu", "fp32", False, rows=16)
    out = []
    for precision, channels_last in (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)):
        seconds, feats = timed(ctx, run, ctx.device, precision, channels_last)
        feats = feats[:16]
        cos = float(np.min((feats * reference).sum(1) / (np.linalg.norm(feats, axis=1) *
                                                         np.linalg.norm(reference, axis=1))))
        rel = float(np.abs(feats - reference).max() / np.abs(reference).max())
        ok = rel < 1e-4 if precision == "fp32" else cos > 0.99
        out.append(Row(f"features {ctx.arch} {precision}{' channels_last' if channels_last else ''}",
                       "PASS" if ok else "FAIL", f"{n / seconds:.0f} img/s",
                       f"{ctx.size} px; against the CPU's fp32: max rel. diff {rel:.1e}, min cosine {cos:.5f}"))
    return out


def knn(ctx: Context) -> List[Row]:
    """The exact search on the device (torch; faiss where it sees a GPU) against torch on the CPU."""
    from moco_bench.evaluators.search import faiss_gpu_ok, search

    n_train, n_val, k = (2000, 200, 20) if ctx.smoke else (100000, 10000, 200)
    rng = np.random.default_rng(0)
    train = rng.standard_normal((n_train, 256), dtype=np.float32)
    val = rng.standard_normal((n_val, 256), dtype=np.float32)
    chunks = dict(query_chunk=16384, train_chunk=65536)
    _, ref = search(train, val, k, device="cpu", backend="torch", **chunks)
    rows = []
    backends = ["torch"] + (["faiss"] if faiss_gpu_ok(str(ctx.device)) else [])
    for backend in backends:
        seconds, (_, found) = timed(ctx, search, train, val, k, device=str(ctx.device), backend=backend, **chunks)
        same = float((found == ref).mean())
        rows.append(Row(f"knn search {backend} on {ctx.device}", "PASS" if same > 0.999 else "FAIL",
                        f"{seconds * 1000:.0f} ms", f"{n_train} x {n_val}, 256-d, k {k}: {100 * same:.3f}% of the "
                                                    "neighbours identical to the CPU's (the rest: float ties)"))
    if len(backends) == 1:
        rows.append(Row("knn search faiss on the GPU", "SKIP", "", "faiss does not see a GPU here (make setup "
                                                                   "installs faiss-gpu where nvidia-smi lists one)"))
    return rows
