"""``moco-bench eval CKPT --config evaluate/<protocol>.yaml [key=value ...]``."""

from __future__ import annotations

from pathlib import Path


def _eval(args) -> int:
    from moco_bench.evaluators.runner import evaluate_checkpoint

    record = evaluate_checkpoint(args.checkpoint, args.config, args.overrides, out_root=args.out, force=args.force,
                                 device=args.device, workers=args.workers)
    metrics = ", ".join(f"{k} {v:.2f}" for k, v in record["metrics"].items())
    print(f"{record['evaluation']['name']}: {record['status']}" + (f" ({metrics})" if metrics else ""))
    if record["status"] != "ok":
        print(record["error"].splitlines()[0])
    return 0 if record["status"] == "ok" else 1


def register(sub) -> None:
    p = sub.add_parser("eval", help="run one evaluation protocol on a checkpoint")
    p.add_argument("checkpoint", help="checkpoint file (any supported format) or random:<arch>[@seed]")
    p.add_argument("--config", required=True, help="evaluate/<protocol>.yaml")
    p.add_argument("overrides", nargs="*", help="config overrides as key=value")
    p.add_argument("--out", type=Path, default=Path("results/runs"), help="results root")
    p.add_argument("--force", action="store_true", help="replace a finished result")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers and parallel jobs")
    p.set_defaults(func=_eval)
