"""Detection transfer on real boxes, longer than the test suite can afford (``make bench``; minutes on a CPU).

Faster R-CNN R18-FPN (``evaluate/demo/deepforest_detection.yaml``) fine-tuned on deepforest's aerial tiles of
real tree crowns (6 train tiles, 2 test tiles, VOC XML boxes) through the evaluator's VOC path, and evaluated
untrained (one step at learning rate 0) and after ``--iters`` iterations. Target: the fine-tuned detector reaches
``--min-ap50`` VOC AP50 on the held-out tiles and beats the untrained one by 10 points; exits 1 otherwise.

``--speed`` instead times training iterations of every protocol model (R50-C4, R50-DC5, R50-FPN Faster and Mask
R-CNN, R50-FPN keypoint R-CNN with the protocol's 8 x 512 head, R18-FPN Faster R-CNN) on the embedded mini-VOC
/ mini-COCO at ``--size`` px, random-init backbones.

``--full`` times the paper's transfer protocols at full size: each protocol file as shipped (its input sizes,
crops, ROI sampling and heads; SyncBN runs as BN in one process), one GPU's share of its batch per iteration, on
embedded data in each dataset's format at the real image sizes (VOC 375 x 500, LVIS 480 x 640, Cityscapes 1024 x
2048). Each row gives the CPU seconds per iteration and the estimated GPU hours of the whole schedule on the
protocol's 8 GPUs: ``MAX_ITER x s/iter x 8``, with s/iter detectron2's published V100 training time of the same
model (MODEL_ZOO.md, 8 V100s) where it has one, else that of the reference model (Mask R-CNN R50-FPN, 0.261)
scaled by the two models' CPU times measured here.

Usage: ``python benchmarks/bench_detection_deepforest.py [--iters 300] [--threads 1]``, or ``--speed [--size 128]``,
or ``--speed --full``.
"""

from __future__ import annotations

import argparse
import importlib
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
from moco_bench.evaluators.catalog import load_evaluation  # noqa: E402

# (name, evaluation config, d2 config or None for the config's own, data, checkpoint)
SPEED_MODELS = [
    ("R50-C4 Faster R-CNN", "demo/voc_detection_c4.yaml", None, "voc", "random:resnet50@0"),
    ("R50-DC5 Faster R-CNN", "demo/voc_detection_c4.yaml", "voc0712_frcnn_dc5_24k.yaml", "voc", "random:resnet50@0"),
    ("R50-FPN Faster R-CNN", "demo/voc_detection_fpn.yaml", None, "voc", "random:resnet50@0"),
    ("R18 small-image FPN Faster R-CNN", "demo/voc_detection_fpn.yaml", None, "voc", "random:resnet18_small_w0.5@0"),
    ("R50-FPN Mask R-CNN", "demo/coco_detection_mask_fpn.yaml", None, "coco", "random:resnet50@0"),
    ("R50-FPN keypoint R-CNN", "demo/coco_detection_keypoint_fpn.yaml", None, "coco", "random:resnet50@0"),
]
# --full: (name, protocol file, data, detectron2's V100 s/iter of the same model or None, protocol files of the
# same model and batch on other schedules, estimated from the same measurement). V100 figures:
# facebookresearch/detectron2 MODEL_ZOO.md (8 V100s, 2 images each): Faster R-CNN R50-C4 1x 0.551, Mask R-CNN
# R50-FPN 1x 0.261, LVIS v0.5 Mask R-CNN R50-FPN 0.292, Cityscapes Mask R-CNN R50-FPN 0.240 (1 image each).
FULL_PROTOCOLS = [
    ("Mask R-CNN R50-FPN, COCO", "coco_mrcnn_fpn_1x.yaml", "coco", 0.261, ["coco_mrcnn_fpn_2x.yaml"]),
    ("Faster R-CNN R50-C4, VOC", "voc07_frcnn_c4_9k.yaml", "voc", 0.551, ["voc0712_frcnn_c4_24k.yaml"]),
    ("Mask R-CNN R50-FPN, LVIS v0.5", "lvis05_mrcnn_fpn_2x.yaml", "lvis", 0.292, []),
    ("Mask R-CNN R50-FPN, Cityscapes", "cityscapes_mrcnn_fpn.yaml", "cityscapes", 0.240, []),
    ("FCN-16s R50, VOC12 aug", "voc12aug_fcn16_30k.yaml", "vocseg", None, []),
    ("FCN-16s R50, Cityscapes", "cityscapes_fcn16_90k.yaml", "cityscapes", None, []),
]
REFERENCE = "Mask R-CNN R50-FPN, COCO"
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


def _full_data(root: Path) -> dict:
    """Embedded sets at the real datasets' image sizes, a few images each."""
    from moco_bench.data.minicityscapes import build_minicityscapes
    from moco_bench.data.minilvis import build_minilvis
    from moco_bench.data.minivocseg import build_minivocseg

    voc = embedded.build_minivoc(root / "minivoc_full", n_trainval=4, n_test=20, canvas=[375, 500])
    return {"voc": voc, "coco": embedded.build_minicoco(voc, root / "minicoco_full"),
            "lvis": build_minilvis(root / "minilvis_full", n_train=10, n_val=2, canvas=[480, 640],
                                   frequency_images=[1, 2]),
            "cityscapes": build_minicityscapes(root / "minicityscapes_full", n_train=2, n_val=1, size=(1024, 2048)),
            "vocseg": build_minivocseg(root / "minivocseg_full", n_train=2, n_val=1, n_extra=1, canvas=[375, 500])}


def _point_sources(cfg, kind: str, root: Path) -> None:
    """The protocol's dataset sources, pointed at the embedded set of the same format."""
    classes = {"voc": list(embedded.FASHION_CLASSES), "vocseg": ["background", *embedded.FASHION_CLASSES]}
    if kind in classes:
        cfg.datasets.classes = classes[kind]
    for name, spec in cfg.datasets.sources.items():
        if spec is None:
            continue
        split = "train" if "train" in name else "val"
        spec.expect = None
        if kind in ("voc", "vocseg"):
            spec.root = str(root)
        elif kind == "coco":
            split = "trainval" if split == "train" else "test"
            spec.json, spec.image_root = str(root / "annotations" / f"instances_{split}.json"), str(root / split)
        elif kind == "lvis":
            spec.json, spec.image_root = str(root / "lvis" / f"lvis_v0.5_{split}.json"), str(root / "coco")
        else:
            spec.image_dir, spec.gt_dir = str(root / "leftImg8bit" / split), str(root / "gtFine" / split)


def _solver(config: str):
    """The protocol's evaluation config and its detectron2 SOLVER, as shipped."""
    from moco_bench.evaluators.detection.d2config import merge_d2_file

    cfg = load_evaluation(REPO / "evaluate" / config)
    task = "segmentation" if cfg.evaluator == "detectron2_semseg" else "detection"
    d2 = importlib.import_module(f"moco_bench.evaluators.{task}.trainer").new_config()
    merge_d2_file(d2, REPO / str(cfg.d2_config), config)
    return cfg, d2.SOLVER


def full_speed(args, out: Path) -> None:
    """CPU s/iter of each paper protocol at full size, one GPU's share of its batch; GPU hours of its schedule."""
    data = _full_data(paths.data_cache() / "embedded")
    print(f"\nfull-size protocols, one GPU's share of the batch per iteration, {torch.get_num_threads()} thread(s), "
          f"{args.speed_iters} iterations (median after the first), random-init ResNet-50:")
    measured = {}
    for name, config, kind, _, _ in FULL_PROTOCOLS:
        cfg, solver = _solver(config)
        _point_sources(cfg, kind, data[kind])
        cfg.trials = 1
        cfg.d2_overrides = OmegaConf.merge(cfg.d2_overrides, {
            "SOLVER": {"IMS_PER_BATCH": solver.IMS_PER_BATCH // int(cfg.resources.gpus),
                       "MAX_ITER": args.speed_iters},
            "TEST": {"PRECISE_BN": {"ENABLED": False}}},
            {"INPUT": {"MASK_FORMAT": "bitmask"}} if kind == "coco" else {})  # mini-COCO masks are RLE
        measured[name] = _evaluate(load_backbone("random:resnet50@0"), cfg, out / "full")["details"][
            "seconds_per_iter"][0]
    ref_v100 = {name: v100 for name, _, _, v100, _ in FULL_PROTOCOLS}[REFERENCE]
    for name, config, _, v100, others in FULL_PROTOCOLS:
        cpu = measured[name]
        gpu_s = v100 if v100 is not None else ref_v100 * cpu / measured[REFERENCE]
        how = "published" if v100 is not None else "scaled"
        for protocol in [config, *others]:
            cfg, solver = _solver(protocol)
            gpus = int(cfg.resources.gpus)
            print(f"  {protocol:28s} {name:31s} CPU {cpu:6.1f} s/iter ({solver.IMS_PER_BATCH // gpus} image(s)); "
                  f"{solver.MAX_ITER:6d} iter x {gpu_s:.3f} s ({how}) x {gpus} GPUs = "
                  f"{solver.MAX_ITER * gpu_s * gpus / 3600:5.1f} GPU hours", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=300, help="fine-tuning iterations (4 tiles each)")
    p.add_argument("--checkpoint", default="random:resnet18@0", help="backbone (any supported checkpoint)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (a busy machine runs faster with 1)")
    p.add_argument("--min-ap50", type=float, default=25.0, help="target VOC AP50 after --iters (300 gave 38 here)")
    p.add_argument("--speed", action="store_true", help="time each protocol model instead (no target)")
    p.add_argument("--full", action="store_true", help="--speed: the paper's protocols at full size, with GPU hours")
    p.add_argument("--speed-iters", type=int, default=3)
    p.add_argument("--size", type=int, default=128, help="--speed image height (width 4/3 of it)")
    p.add_argument("--rois", type=int, default=64, help="--speed ROIs sampled per image")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_detection_") as tmp:
        if args.speed:
            (full_speed if args.full else speed)(args, Path(tmp))
            return 0
        ok = deepforest(args, Path(tmp))
    print(json.dumps({"deepforest_target_met": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
