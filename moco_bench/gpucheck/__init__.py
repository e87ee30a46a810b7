"""``moco-bench gpu-check`` (``make gpu-check``): prove the GPU paths on one GPU in a few minutes.

One call on a fresh GPU machine after ``make setup`` prints a table, one line per check, each PASS or FAIL with
its figure: versions; MoCo v2 R50 pretraining steps on synthetic 224 px images (fp32, bf16, bf16 +
channels_last: images/s, loss finite, the momentum rule); the data path (the tensor pipeline's decode and
augmentation on the GPU, PIL's per CPU core) and which of data or compute limits a step; torchrun with NCCL at
world size 1 (all-gather, shuffle BN, a DDP MoCo step, multi-head linear steps with SyncBN heads); feature
extraction images/s (fp32, bf16, channels_last) with the features held against the CPU's; the kNN search on
the GPU (torch, and faiss-gpu where installed) against the CPU's; 20 detectron2 iterations of the R50-C4 and
R50-FPN protocols. Without a GPU it checks its arguments, says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from moco_bench.core.helpfmt import DefaultsHelpFormatter

CHECKS = ("versions", "moco", "data", "ddp", "features", "knn", "detection")


def _arguments(args) -> None:
    """The checks that need no GPU (the test runs them): argparse.error exits 2 naming the option."""
    if args.batch < 8 or args.batch % 8:
        args.parser.error(f"--batch {args.batch}: a positive multiple of 8 (the recipe's 8 shuffle-BN groups)")
    if args.steps < 2:
        args.parser.error(f"--steps {args.steps}: at least 2 timed steps")
    if args.budget < 60:
        args.parser.error(f"--budget {args.budget}: at least 60 seconds")
    unknown = sorted(set(args.only or ()) - set(CHECKS))
    if unknown:
        args.parser.error(f"--only {','.join(unknown)}: expected some of {','.join(CHECKS)}")


def _run(args) -> int:
    import torch

    _arguments(args)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device visible (torch {torch.__version__}, built for CUDA {torch.version.cuda}): "
              "nothing to measure here. Run `make gpu-check` on a machine with a GPU, after `make setup`.")
        return 0
    from moco_bench.gpucheck.checks import Context
    from moco_bench.gpucheck.run import run_checks

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        ctx = Context.make(args, Path(tmp))
        rows = run_checks(ctx, args.only or CHECKS, deadline=time.monotonic() + args.budget)
    if args.out:
        Path(args.out).write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    failed = [r.check for r in rows if r.status == "FAIL"]
    print(f"gpu-check: {len(rows) - len(failed)} of {len(rows)} lines pass or inform"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def register(sub) -> None:
    p = sub.add_parser("gpu-check", help="run every GPU path once on one GPU and print a table (a few minutes)",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("--device", default="cuda", help="the GPU to check")
    p.add_argument("--batch", type=int, default=256, help="MoCo batch on the one GPU (the recipe's global batch)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per setting")
    p.add_argument("--budget", type=int, default=480, help="seconds; checks that would start later are skipped")
    p.add_argument("--only", type=lambda s: [c for c in s.split(",") if c], default=None,
                   help=f"comma-separated subset of {','.join(CHECKS)}")
    p.add_argument("--out", type=Path, default=None, help="also write the table as JSON")
    p.add_argument("--cpu-smoke", action="store_true", help=argparse.SUPPRESS)  # every check at toy size on CPU
    p.set_defaults(func=_run, parser=p)
