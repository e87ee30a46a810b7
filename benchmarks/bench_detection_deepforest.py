"""Detection transfer on real boxes, longer than the test suite can afford (``make bench``; minutes on a CPU).

Faster R-CNN R18-FPN (``evaluate/demo/deepforest_detection.yaml``) fine-tuned on deepforest's aerial tiles of
real tree crowns (6 train tiles, 2 test tiles, VOC XML boxes) through the evaluator's VOC path, and evaluated
untrained (one step at learning rate 0) and after ``--iters`` iterations. Target: the fine-tuned detector reaches
``--min-ap50`` VOC AP50 on the held-out tiles and beats the untrained one by 10 points; exits 1 otherwise.

``--speed`` instead times training iterations of every protocol model (R50-C4, R50-DC5, R50-FPN Faster and Mask
R-CNN, R50-FPN keypoint R-CNN with the protocol's 8 x 512 head, R18-FPN Faster R-CNN) on the embedded mini-VOC
/ mini-COCO at ``--size`` px, random-init backbones.

Usage: ``python benchmarks/bench_detection_deepforest.py [--iters 300] [--threads 1]``, or ``--speed [--size 128]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from omegaconf import OmegaConf  # noqa: E402

from moco_bench.convert import load_backbone  # noqa: E402
from moco_bench.core import paths  # noqa: E402
from moco_bench.data import embedded  # noqa: E402
from moco_bench.data.deepforest import build_deepforest_voc  # noqa: E402
from moco_bench.engine.runner import run_evaluation  # noqa: E402
from moco_bench.evaluators.schema import load_evaluation  # noqa: E402

# (name, evaluation config, d2 config or None for the config's own, data, checkpoint)
SPEED_MODELS = [
    ("R50-C4 Faster R-CNN", "demo/voc_detection_c4.yaml", None, "voc", "random:resnet50@0"),
    ("R50-DC5 Faster R-CNN", "demo/voc_detection_c4.yaml", "voc0712_frcnn_dc5_24k.yaml", "voc", "random:resnet50@0"),
    ("R50-FPN Faster R-CNN", "demo/voc_detection_fpn.yaml", None, "voc", "random:resnet50@0"),
    ("R18 small-image FPN Faster R-CNN", "demo/voc_detection_fpn.yaml", None, "voc", "random:resnet18_small_w0.5@0"),
    ("R50-FPN Mask R-CNN", "demo/coco_detection_mask_fpn.yaml", None, "coco", "random:resnet50@0"),
    ("R50-FPN keypoint R-CNN", "demo/coco_detection_keypoint_fpn.yaml", None, "coco", "random:resnet50@0"),
]
PROTOCOL_HEADS = {"MODEL": {"ROI_KEYPOINT_HEAD": {"CONV_DIMS": [512] * 8}}}  # the demo shrinks it; time the protocol's


def _evaluate(backbone, cfg, out: Path) -> dict:
    t0 = time.perf_counter()
    record = run_evaluation(backbone, cfg, out_root=out, force=True, workers=0)
    if record["status"] != "ok":
        raise SystemExit(f"{cfg.name}: {record['status']}: {record['error']}")
    record["wall_s"] = time.perf_counter() - t0
    return record


def deepforest(args, out: Path) -> bool:
    voc = build_deepforest_voc(paths.data_cache() / "embedded" / "deepforest")
    print(f"deepforest tiles: {voc}")
    backbone = load_backbone(args.checkpoint)
    rows = {}
    # untrained: one step at learning rate 0 (detectron2 needs an iteration; only BN statistics move)
    for label, iters, lr in (("untrained", 1, 0.0), ("fine-tuned", args.iters, None)):
        cfg = load_evaluation(REPO / "evaluate" / "demo" / "deepforest_detection.yaml")
        solver = {"MAX_ITER": iters, "STEPS": [int(iters * 2 / 3), int(iters * 13 / 15)]}
        if lr is not None:
            solver.update(BASE_LR=lr, STEPS=[])
        cfg.d2_overrides = OmegaConf.merge(cfg.d2_overrides, {"SOLVER": solver})
        rec = _evaluate(backbone, cfg, out / label)
        m, d = rec["metrics"], rec["details"]
        rows[label] = m
        print(f"  {label:10s} ({iters:4d} iterations): AP {m['AP']:5.1f}  AP50 {m['AP50']:5.1f}  "
              f"AP75 {m['AP75']:5.1f}  ({d['images_evaluated'][0]:.0f}/{d['test_images']} test tiles; "
              f"{d['seconds_per_iter'][0]:.2f} s/iter, {rec['wall_s']:.0f} s in all)")
    tuned = rows["fine-tuned"]["AP50"]
    gain = tuned - rows["untrained"]["AP50"]
    ok = tuned >= args.min_ap50 and gain >= 10
    print(f"target: AP50 >= {args.min_ap50} and +10 over untrained: {'met' if ok else 'MISSED'} "
          f"(AP50 {tuned:.1f}, +{gain:.1f})")
    return ok


def speed(args, out: Path) -> None:
    voc = embedded.build_minivoc(paths.data_cache() / "embedded" / "minivoc_speed", n_trainval=16, n_test=2,
                                 canvas=[args.size, int(args.size * 4 / 3)])
    coco = embedded.build_minicoco(voc, paths.data_cache() / "embedded" / "minicoco_speed")
    print(f"\nseconds per training iteration, 2 images of {args.size}x{int(args.size * 4 / 3)}, "
          f"{torch.get_num_threads()} thread(s), {args.speed_iters} iterations (median after the first):")
    for name, config, d2_config, data, ckpt in SPEED_MODELS:
        cfg = load_evaluation(REPO / "evaluate" / config)
        if d2_config:
            cfg.d2_config = f"evaluate/detectron2/{d2_config}"
        for src_name, spec in cfg.datasets.sources.items():
            if data == "voc":
                spec.root = str(voc)
            else:
                split = "trainval" if src_name.endswith("trainval") else "test"
                spec.json, spec.image_root = str(coco / "annotations" / f"instances_{split}.json"), str(coco / split)
        size = [args.size, int(args.size * 4 / 3)]
        cfg.d2_overrides = OmegaConf.merge(cfg.d2_overrides, PROTOCOL_HEADS, {
            "INPUT": {"MIN_SIZE_TRAIN": [size[0]], "MAX_SIZE_TRAIN": size[1], "MIN_SIZE_TEST": size[0],
                      "MAX_SIZE_TEST": size[1]},
            "SOLVER": {"IMS_PER_BATCH": 2, "MAX_ITER": args.speed_iters},
            "MODEL": {"ROI_HEADS": {"BATCH_SIZE_PER_IMAGE": args.rois}}, "TEST": {"PRECISE_BN": {"ENABLED": False}}})
        rec = _evaluate(load_backbone(ckpt), cfg, out / "speed")
        print(f"  {name:24s} {rec['details']['seconds_per_iter'][0]:6.2f} s/iter  "
              f"({args.rois} ROIs per image; norm {rec['evaluation']['norm']})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=300, help="fine-tuning iterations (4 tiles each)")
    p.add_argument("--checkpoint", default="random:resnet18@0", help="backbone (any supported checkpoint)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (a busy machine runs faster with 1)")
    p.add_argument("--min-ap50", type=float, default=25.0, help="target VOC AP50 after --iters (300 gave 38 here)")
    p.add_argument("--speed", action="store_true", help="time each protocol model instead (no target)")
    p.add_argument("--speed-iters", type=int, default=3)
    p.add_argument("--size", type=int, default=128, help="--speed image height (width 4/3 of it)")
    p.add_argument("--rois", type=int, default=64, help="--speed ROIs sampled per image")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_detection_") as tmp:
        if args.speed:
            speed(args, Path(tmp))
            return 0
        ok = deepforest(args, Path(tmp))
    print(json.dumps({"deepforest_target_met": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
