"""``moco-bench pretrain``: run a MoCo recipe here, under torchrun, or as a SLURM job.

One GPU or CPU:   moco-bench pretrain --config pretrain/mocov2_demo_fmnist.yaml [key=value ...]
One node:         torchrun --nproc_per_node=8 -m moco_bench pretrain --config pretrain/mocov2_r50_in1k_200ep.yaml
Several nodes:    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \
                      -m moco_bench pretrain --config ...   (the same line on every node)
SLURM:            moco-bench pretrain --config ... --launcher slurm --nodes 2 --gpus-per-node 8 --partition P
"""

from __future__ import annotations

import argparse
from pathlib import Path

from moco_bench.core.helpfmt import RawDefaultsHelpFormatter


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain", help="MoCo v1/v2 pretraining", description=__doc__, formatter_class=RawDefaultsHelpFormatter)
    p.add_argument("--config", required=True, help="a recipe: shipped, by name (mocov2_r50_in1k_200ep), or any path")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.epochs=100")
    p.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help="local: this process (or each torchrun process); slurm: submit a job with submitit")
    slurm = p.add_argument_group("SLURM (--launcher slurm)")
    slurm.add_argument("--nodes", type=int, default=1)
    slurm.add_argument("--gpus-per-node", type=int, default=8, help="one task per GPU")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--timeout-min", type=int, default=72 * 60,
                       help="job time limit; a job that reaches it is requeued and resumes from its last checkpoint")
    slurm.add_argument("--cpus-per-task", type=int, default=10, help="data-loading workers need CPUs")
    slurm.add_argument("--mem-gb", type=float, default=None)
    slurm.add_argument("--job-dir", default=None, help="submitit's logs and pickles (default: <output_dir>/slurm)")
    slurm.add_argument("--slurm-cluster", default=None, help=argparse.SUPPRESS)  # submitit's local/debug, for tests
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from moco_bench.core.config import resolved
    from moco_bench.core.launch import submit
    from moco_bench.core.paths import config_file
    from moco_bench.pretrain.job import PretrainJob
    from moco_bench.pretrain.schema import load_recipe
    from moco_bench.pretrain.train import preflight, pretrain

    cfg = load_recipe(config_file(args.config, "pretrain"), args.overrides)
    if args.launcher == "local":
        last = pretrain(cfg)
        if last is not None:
            print(f"last checkpoint: {last}")
        return 0
    preflight(cfg, args.nodes * max(1, args.gpus_per_node))  # fail here, not in the queue
    job_dir = Path(args.job_dir or Path(cfg.output_dir) / "slurm")
    job = submit(PretrainJob(resolved(cfg)), folder=job_dir, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                 partition=args.partition, timeout_min=args.timeout_min, cpus_per_task=args.cpus_per_task,
                 mem_gb=args.mem_gb, name=cfg.name, cluster=args.slurm_cluster)
    print(f"submitted job {job.job_id}; logs in {job_dir}")
    return 0
