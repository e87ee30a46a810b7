"""Linear-evaluation benchmarks (``make bench``), on the real training loop and the embedded ImageFolder.

1. Multi-head cost: a training step of the five BN + Linear heads fed by one frozen backbone pass, against a step
   of one head (feature5, whose run needs the whole backbone), for ResNet-50 at 224 px with 1000-way heads (the
   protocol's shapes). Target: multi-head <= 1.3x single head, so >= 3.5x cheaper than five separate full-pass
   runs (5 / 1.3 = 3.85). Also shown: the sum of five single runs whose taps stop at their layer. Exits 1 on a miss.
2. channels_last + mixed precision (bf16 autocast on CPU, fp16 on GPU) against plain fp32: training throughput of
   main_lincls' fc on the same ResNet-50, and top-1 per layer after a short multi-head run (ResNet-18, 32 px).
3-4. On cached features (benchmarks/cached_linear.py): the probe grid against one main_lincls-style head, and
   the transfer suite's torch L-BFGS against scikit-learn's; ``--cached-only`` runs just these.

A step's cost is the period between successive training calls of the heads (data, backbone pass, heads, backward,
optimizer step); each setting reports its cheapest step over ``--repeats`` runs of ``--steps`` steps, the settings
being compared run in alternation. On CPU the period is measured in process CPU time with ``--threads`` intra-op
threads (default 1): on a shared machine, wall time and multi-threaded pools measure the neighbours' load more than
our work (a 2-thread pool then spends milliseconds in barriers on each small head op). On GPU it is wall time.
Usage: ``python benchmarks/bench_linear.py [--arch resnet50 --size 224 --batch 16 --steps 3 --repeats 1]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.cached_linear import bench_probe_grid, bench_transfer_logreg  # noqa: E402
from moco_bench import evaluators  # noqa: E402
from moco_bench.convert import load_backbone  # noqa: E402
from moco_bench.core.distributed import DistEnv  # noqa: E402
from moco_bench.data.embedded import build_imagefolder  # noqa: E402
from moco_bench.evaluators.base import EvalContext  # noqa: E402
from moco_bench.evaluators.catalog import load_evaluation  # noqa: E402
from moco_bench.evaluators.linear import linear  # noqa: E402
from moco_bench.evaluators.linear.heads import Heads, linear_layer  # noqa: E402
from moco_bench.evaluators.linear.train import LinearRun, TrainConfig, train_heads  # noqa: E402
from moco_bench.models.taps import FeatureTaps, stage_channels  # noqa: E402

LAYERS = ["feature1", "feature2", "feature3", "feature4", "feature5"]
FAST = ("features.precision=bf16", "features.channels_last=true")
PLAIN = ("features.precision=fp32", "features.channels_last=false")


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


class Setting:
    """One thing to time: a frozen model, what it extracts and the heads trained on it."""

    def __init__(self, cfg, model, reference, extract, heads, train, val, di):
        self.cfg, self.model, self.reference, self.extract, self.heads = cfg, model, reference, extract, heads
        self.train, self.val, self.di = train, val, di
        self.steps: list = []

    def run(self) -> None:
        """One epoch through ``train_heads``; records the periods between the heads' training calls."""
        heads = copy.deepcopy(self.heads)
        stamps = []
        heads.register_forward_pre_hook(lambda m, _: stamps.append(clock(self.di.device)) if m.training else None)
        with tempfile.TemporaryDirectory() as out:
            train_heads(LinearRun(extract=self.extract, heads=heads, backbone=self.model, reference=self.reference,
                                  train_set=self.train, val_set=self.val, tc=TrainConfig.from_config(self.cfg),
                                  num_classes=1000, out_dir=Path(out), env=self.di, workers=0, fingerprint="bench",
                                  source="bench", stage=EvalContext(out_dir=Path(out), cache_dir=Path(out)).stage))
        self.steps += [b - a for a, b in zip(stamps, stamps[1:])]

    @property
    def best(self) -> float:
        return min(self.steps)


def protocol_setup(args, root: Path, di: DistEnv, *overrides: str):
    """imagenet_mhead_linear.yaml at the benchmark's arch/size/batch, heads 1000-way, on the embedded images."""
    cfg = load_evaluation(REPO / "evaluate" / "imagenet_mhead_linear.yaml", [
        f"arch={args.arch}", f"data.root={root}", "data.classes=10", "data.expect=null",
        f"optim.batch_size={args.batch}", "schedule.epochs=1", f"transform.train.crop={args.size}",
        f"transform.test.resize={args.size}", f"transform.test.crop={args.size}", *overrides])
    train, val = linear.build_datasets(cfg)
    train, val = Subset(train, range(args.batch * args.steps)), Subset(val, range(1))
    cfg_heads = copy.deepcopy(cfg)
    cfg_heads.data.classes = 1000  # the protocol's head size; the 10 embedded labels are a subset
    ctx = EvalContext(out_dir=Path("unused"), cache_dir=Path("unused"), workers=0)
    run = linear.linear_run(load_backbone(f"random:{args.arch}"), cfg_heads, ctx, di, train, val)
    return cfg, run.backbone, run.reference, run.extract, run.heads, train, val


def alternate(settings, repeats: int) -> None:
    for _ in range(repeats):
        for s in settings:
            s.run()


def bench_multihead(args, root: Path, di: DistEnv) -> bool:
    cfg, model, reference, taps, heads, train, val = protocol_setup(args, root, di)
    pooling = linear.resolved(cfg)["features"]["pooling"]
    single = {layer: Setting(cfg, model, reference, FeatureTaps(model, [layer], {layer: pooling[layer]}),
                             Heads({layer: heads.heads[layer]}), train, val, di) for layer in LAYERS}
    multi = Setting(cfg, model, reference, taps, heads, train, val, di)
    alternate([multi, single["feature5"]], args.repeats)
    alternate([single[layer] for layer in LAYERS[:-1]], 1)
    print(f"## multi-head cost ({args.arch}, {args.size} px, 1000-way heads, batch {args.batch}, {di.device}; cheapest "
          f"of {len(multi.steps)} steps)")
    for layer, s in single.items():
        print(f"single head {layer:>8}: {s.best:6.2f} per step ({args.batch / s.best:6.1f} img per s)")
    print(f"five heads, one pass: {multi.best:6.2f} per step ({args.batch / multi.best:6.1f} img per s)")
    ratio = multi.best / single["feature5"].best
    separate = sum(s.best for s in single.values()) / multi.best
    ok = ratio <= 1.3
    print(f"multi / single = {ratio:.3f} (target <= 1.3) -> five separate full-pass runs cost {5 / ratio:.2f}x the "
          f"multi-head run (target >= 3.5): {'ok' if ok else 'MISSED'}")
    print(f"five separate runs with depth-limited taps: {separate:.2f}x the multi-head run")
    return ok


def bench_precision(args, root: Path, di: DistEnv) -> None:
    settings = {}
    for label, flags in (("fp32", PLAIN), ("channels_last + amp", FAST)):
        cfg, model, reference, _, _, train, val = protocol_setup(args, root, di, *flags)
        heads = Heads({"gap": linear_layer(stage_channels(model)["gap"], 1000, 0.01)})
        extract = lambda x, m=model: {"gap": m(x)}  # noqa: E731 - main_lincls: fc on the pooled feature
        settings[label] = Setting(cfg, model, reference, extract, heads, train, val, di)
    alternate(list(settings.values()), args.repeats)
    amp = "bf16"
    print(f"\n## channels_last + {amp} autocast vs fp32 (main_lincls fc, {args.arch}, {args.size} px, "
          f"batch {args.batch}, {di.device})")
    for label, s in settings.items():
        print(f"{label:>20}: {args.batch / s.best:7.1f} img per s")
    print(f"speed-up: {settings['fp32'].best / settings['channels_last + amp'].best:.2f}x")
    top1 = {}
    backbone = load_backbone("random:resnet18_small_w0.5")
    for label, flags in (("fp32", PLAIN), ("channels_last + amp", FAST)):
        cfg = load_evaluation(REPO / "evaluate" / "demo" / "imagenet_mhead_linear.yaml", [f"data.root={root}", *flags])
        with tempfile.TemporaryDirectory() as out:
            ctx = EvalContext(out_dir=Path(out), cache_dir=Path(out), device=str(di.device), workers=0)
            top1[label] = evaluators.get("mhead_linear")(backbone, cfg, ctx).metrics
    print(f"\ntop-1 after evaluate/demo/imagenet_mhead_linear.yaml ({cfg.schedule.epochs} epochs, random-init "
          "ResNet-18, 32 px, 1000 train images, same seed):")
    for layer in LAYERS:
        a, b = top1["fp32"][f"{layer}_top1"], top1["channels_last + amp"][f"{layer}_top1"]
        print(f"{layer}: fp32 {a:5.1f}  channels_last + amp {b:5.1f}  difference {b - a:+.1f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads on CPU (0: torch's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cached-only", action="store_true", help="only sections 3-4 (heads on cached features)")
    p.add_argument("--rows", type=int, default=20000, help="cached feature rows of section 3")
    p.add_argument("--lr-rows", type=int, default=2000, help="train rows of section 4")
    p.add_argument("--lr-dim", type=int, default=512, help="feature dim of section 4")
    p.add_argument("--lr-classes", type=int, default=20, help="classes of section 4")
    p.add_argument("--lr-costs", type=int, default=12, help="costs of section 4 (the protocol: 45)")
    args = p.parse_args()
    di = DistEnv(0, 1, 0, torch.device(args.device))
    if di.device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    unit = "CPU s" if di.device.type == "cpu" else "s"
    print(f"# {torch.get_num_threads()} intra-op thread(s); step costs in {unit}")
    bench_probe_grid(str(di.device), args.rows)
    bench_transfer_logreg(str(di.device), args.lr_rows, args.lr_dim, args.lr_classes, args.lr_costs)
    if args.cached_only:
        return 0
    with tempfile.TemporaryDirectory() as cache:
        os.environ["MOCO_BENCH_DATA"] = cache
        root = build_imagefolder(Path(cache) / "imagefolder", train_per_class=100, val_per_class=30, size=32)
        ok = bench_multihead(args, root, di)
        bench_precision(args, root, di)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
