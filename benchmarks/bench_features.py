"""Feature-extraction benchmarks (``make bench``): fp32 against channels_last + bf16 autocast on this CPU.

1. Throughput (images/s) of the frozen-feature pass (``features.extract``: DataLoader, taps, cache writes) for
   ResNet-50 at 224 px with the SVM protocol's feature5 pooling, and ResNet-18 at 64 px (the demo), on the
   embedded mini-VOC's images. Four settings: fp32, channels_last, bf16, channels_last + bf16; each reports its
   best of ``--repeats`` alternating runs (a busy shared machine only ever adds time).
2. What reduced precision does to the numbers: the demo VOC07 SVM mAP (mini-VOC, 300 + 300 images) and the demo
   kNN top-1/top-5 (embedded ImageFolder, 5,000 + 1,000 images) with fp32 and with channels_last + bf16 features
   (``--ckpt``, default ``random:resnet18_small_w0.5``, the demo backbone; a trained checkpoint shows the effect
   on meaningful features).
No pass/fail target: the figures are reported. Usage: ``python benchmarks/bench_features.py [--images 32]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.data import Subset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from moco_bench import evaluators  # noqa: E402
from moco_bench.convert import load_backbone  # noqa: E402
from moco_bench.data.embedded import build_imagefolder, build_minivoc  # noqa: E402
from moco_bench.data.readers import open_split  # noqa: E402
from moco_bench.data.transforms import eval_size, eval_transform  # noqa: E402
from moco_bench.evaluators.base import EvalContext  # noqa: E402
from moco_bench.evaluators.frozen.features import extract as extract_features  # noqa: E402
from moco_bench.evaluators.schema import load_evaluation  # noqa: E402
from moco_bench.models.taps import FeatureTaps  # noqa: E402

SETTINGS = {"fp32": ("fp32", False), "channels_last": ("fp32", True), "bf16": ("bf16", False),
            "channels_last+bf16": ("bf16", True)}


def throughput(arch, config, voc, n, batch, repeats, tmp):
    classes = ",".join(load_evaluation(REPO / "evaluate/demo/voc07_svm.yaml").data.classes)
    cfg = load_evaluation(REPO / config, [f"data.root={voc}", f"data.classes=[{classes}]", "data.expect=null"])
    data, t = OmegaConf.to_container(cfg.data, resolve=True), OmegaConf.to_container(cfg.transform)
    dataset = Subset(open_split(data, "test", eval_transform(t["test"], t["mean"], t["std"])), range(n))
    pooling = OmegaConf.to_container(cfg.features.pooling)
    best = {name: float("inf") for name in SETTINGS}
    for _ in range(repeats):
        for name, (precision, channels_last) in SETTINGS.items():
            taps = FeatureTaps(load_backbone(f"random:{arch}").build_model(), ["feature5"], pooling)
            t0 = time.perf_counter()
            extract_features(taps, dataset, {"feature5": Path(tmp) / f"{arch}-{name}.npy"}, images=[""] * n,
                             batch_size=batch, workers=1, device="cpu", precision=precision,
                             channels_last=channels_last, desc=name)
            best[name] = min(best[name], time.perf_counter() - t0)
    size = eval_size(cfg.transform.test)
    line = ", ".join(f"{name} {n / t:.1f}" for name, t in best.items())
    print(f"{arch} {size}px feature5, batch {batch}, {n} images, images/s: {line}; "
          f"channels_last+bf16 / fp32 = {best['fp32'] / best['channels_last+bf16']:.2f}x")


def metric_change(ckpt, voc, folder, tmp):
    backbone = load_backbone(ckpt)
    for name, config, root in (("VOC07 SVM (demo)", "evaluate/demo/voc07_svm.yaml", voc),
                               ("kNN (demo)", "evaluate/demo/imagenet_knn.yaml", folder)):
        out = {}
        for setting, extra in (("fp32", []), ("channels_last+bf16", ["features.precision=bf16",
                                                                     "features.channels_last=true"])):
            cfg = load_evaluation(REPO / config, [f"data.root={root}", *extra])
            ctx = EvalContext(out_dir=Path(tmp) / "out", cache_dir=Path(tmp) / "cache", workers=2)
            out[setting] = evaluators.get(cfg.evaluator)(backbone, cfg, ctx).metrics
            print(f"{name} {setting}: " + ", ".join(f"{k} {v:.2f}" for k, v in out[setting].items()))
        print(f"{name} change (bf16 - fp32): " + ", ".join(
            f"{k} {out['channels_last+bf16'][k] - v:+.2f}" for k, v in out["fp32"].items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--ckpt", default="random:resnet18_small_w0.5")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 autocast on CPU")
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        voc = build_minivoc(Path(tmp) / "minivoc")
        folder = build_imagefolder(Path(tmp) / "imagefolder")
        throughput("resnet50", "evaluate/voc07_svm.yaml", voc, args.images, 16, args.repeats, tmp)
        throughput("resnet18_small_w0.5", "evaluate/demo/voc07_svm.yaml", voc, 8 * args.images, 64, args.repeats, tmp)
        metric_change(args.ckpt, voc, folder, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
