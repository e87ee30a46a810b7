"""``moco-bench eval CKPT --config evaluate/<protocol>.yaml [key=value ...]``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from moco_bench.core.helpfmt import DefaultsHelpFormatter

DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"
LABEL_HELP = ("the checkpoint's name in tables and plots, stored in each record (default: the file stem, with its "
              "folder where the stem is generic such as checkpoint_0199; 'random init <arch>'; 'raw pixels')")
WEIGHTS_HELP = ("which copy of the network to evaluate when the file holds several (model, ema, teacher, student, "
                "momentum, or a key prefix; moco-bench convert's report lists them); default: the format's own")


def announce_device(requested: str) -> str:
    """The device ``requested`` resolves to (``auto``: CUDA when available), printed before any work."""
    from moco_bench.core.env import resolve_device

    device = resolve_device(requested)
    print(f"device: {device}" + (" (auto)" if requested == "auto" else ""), flush=True)
    return device


def _eval(args) -> int:
    from moco_bench.engine.runner import evaluate_checkpoint, result_path
    from moco_bench.results.store import check_label

    t0 = time.perf_counter()
    overrides = list(args.overrides) + ([f"trials={args.trials}"] if args.trials is not None else [])
    label = check_label(args.label) if args.label is not None else None
    record = evaluate_checkpoint(args.checkpoint, args.config, overrides, out_root=args.out, force=args.force,
                                 device=announce_device(args.device), workers=args.workers, weights=args.weights,
                                 label=label)
    metrics = ", ".join(f"{k} {v:.2f}" for k, v in record["metrics"].items())
    print(f"{record['evaluation']['name']}: {record['status']}" + (f" ({metrics})" if metrics else ""))
    if record["status"] == "skipped":  # a failure was logged where it happened; a skip says why here, once
        print(f"  {record['error'].splitlines()[0]}")
    print(f"  record: {result_path(args.out, record)} ({time.perf_counter() - t0:.0f} s)")
    return 0 if record["status"] == "ok" else 1


def _eval_all(args) -> int:
    import pandas as pd

    from moco_bench.engine.eval_all import eval_all
    from moco_bench.engine.suite import load_suite
    from moco_bench.results.store import check_label

    label = check_label(args.label) if args.label is not None else None
    suite = load_suite(args.suite, args.overrides, only=_names(args.only), skip=_names(args.skip))
    if args.plan:
        return _plan(args, suite)
    slurm = {"cluster": args.slurm_cluster, "partition": args.partition}
    rows = eval_all(args.checkpoint, suite, out_root=args.out, force=args.force, device=announce_device(args.device),
                    workers=args.workers, launcher=args.launcher, slurm=slurm, weights=args.weights, label=label)
    print(f"\nsuite {suite.name} on {args.checkpoint}:")
    print(pd.DataFrame(rows).fillna("").to_markdown(index=False, disable_numparse=True))
    failed = [r["evaluation"] for r in rows if r["status"] == "failed"]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def _names(text):
    return [n for n in text.split(",") if n] if text else None


def _plan(args, suite) -> int:
    import pandas as pd

    from moco_bench.convert import load_backbone
    from moco_bench.engine.plan import plan

    rows, totals = plan(load_backbone(args.checkpoint, weights=args.weights), suite, args.out)
    shown = [{**r, "gpu_hours": _hours(r["gpu_hours"]), "data": _cell(r["data"]), "fit": _cell(r["fit"])}
             for r in rows]
    print(f"plan: suite {suite.name} on {args.checkpoint}")
    print(pd.DataFrame(shown).to_markdown(index=False, disable_numparse=True))
    unestimated = f" (no estimate for {', '.join(totals['unestimated'])})" if totals["unestimated"] else ""
    print(f"total: {_hours(totals['to_run']) or 0} GPU hours to run{unestimated}; {_hours(totals['all'])} for the "
          f"whole suite, done and skipped ones included ({totals['gpu']}; throughputs from {totals['costs']})")
    return 0


def _hours(h) -> str:
    return "" if h is None else "<0.01" if 0 < h < 0.01 else f"{h:.2f}" if h < 10 else f"{h:.1f}"


def _cell(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def register(sub) -> None:
    p = sub.add_parser("eval", help="run one evaluation protocol on a checkpoint",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint file (any supported format) or random:<arch>[@seed]")
    p.add_argument("--config", required=True,
                   help="a shipped protocol by name (imagenet_knn, demo/imagenet_knn) or any config by path")
    p.add_argument("overrides", nargs="*", help="config overrides as key=value")
    p.add_argument("--out", type=Path, default=Path("results/runs"), help="results root")
    p.add_argument("--force", action="store_true", help="replace a finished result")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers and parallel jobs")
    p.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    p.add_argument("--label", default=None, help=LABEL_HELP)
    p.add_argument("--trials", type=int, default=None,
                   help="independent runs (seeds) reported as mean and std, for protocols with a 'trials' key")
    p.set_defaults(func=_eval)

    a = sub.add_parser("eval-all", help="run every evaluation of a suite on a checkpoint (resumable)",
                       formatter_class=DefaultsHelpFormatter)
    a.add_argument("checkpoint", help="checkpoint file (any supported format) or random:<arch>[@seed]")
    a.add_argument("--suite", default="paper", help="a shipped suite by name (paper, quick, demo) or any by path")
    a.add_argument("overrides", nargs="*", help="key=value, applied to every evaluation that has the key")
    a.add_argument("--only", default=None, metavar="NAMES", help="comma-separated evaluations to run, no others")
    a.add_argument("--skip", default=None, metavar="NAMES", help="comma-separated evaluations to leave out")
    a.add_argument("--plan", action="store_true",
                   help="say what would run, what is done, each dataset's check and the GPU hours; run nothing")
    a.add_argument("--out", type=Path, default=Path("results/runs"), help="results root")
    a.add_argument("--force", action="store_true", help="re-run finished evaluations")
    a.add_argument("--device", default="auto", help=DEVICE_HELP)
    a.add_argument("--workers", type=int, default=2, help="DataLoader workers and parallel jobs")
    a.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="local: this machine (a per-GPU protocol gets a process per GPU it asks for); slurm: one "
                        "submitit job per evaluation, sized by its config's resources block (GPUs, CPUs, time)")
    a.add_argument("--partition", default=None, help="SLURM partition")
    a.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    a.add_argument("--label", default=None, help=LABEL_HELP)
    a.add_argument("--slurm-cluster", default=None, help=argparse.SUPPRESS)  # submitit's local/debug, for tests
    a.set_defaults(func=_eval_all)
