"""gpu-check: MoCo pretraining steps, the pretraining data path, and detectron2 fine-tuning, through the suite's
own training code."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import List

import torch

from moco_bench.core.paths import project_file
from moco_bench.gpucheck.checks import Context, Row, env_of, finite, guarded, recipe, timed


class _Synthetic:
    """``n`` identical batches already on the device, as a loader: the steps then measure compute alone."""

    def __init__(self, images, n: int):
        self.images, self.n, self.batch_size = images, n, len(images[0])

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter([(self.images, None)] * self.n)


def moco_steps(ctx: Context) -> List[Row]:
    return [_moco(ctx, precision, channels_last)
            for precision, channels_last in (("fp32", False), ("bf16", False), ("bf16", True))]


def _moco(ctx: Context, precision: str, channels_last: bool) -> Row:
    from moco_bench.pretrain.compute import step_compute
    from moco_bench.pretrain.train import build_training, train_one_epoch

    cfg = recipe(ctx, f"compute.precision={precision}", f"compute.channels_last={str(channels_last).lower()}")
    torch.manual_seed(0)
    moco, model, optimizer, _ = build_training(cfg, env_of(ctx))
    compute = step_compute(cfg, ctx.device)
    images = [torch.randn(ctx.batch, 3, ctx.size, ctx.size, device=ctx.device) for _ in range(2)]
    momentum_ok = _momentum_rule(moco, compute, images, ctx)
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    run = dict(epoch=0, env=env_of(ctx), logs=None, log_every=1, last_checkpoint=None)
    train_one_epoch(model, _Synthetic(images, 2), optimizer, compute, **run)  # warm-up (cuDNN autotuning)
    stats = train_one_epoch(model, _Synthetic(images, ctx.steps), optimizer, compute, **run)
    setting = precision + (" channels_last" if channels_last else "")
    ctx.found[setting] = stats["images_per_s"]
    memory = f", peak {torch.cuda.max_memory_allocated(ctx.device) / 2**30:.1f} GiB" if ctx.cuda else ""
    return Row(f"moco v2 {ctx.arch} step {setting}", "PASS" if finite(stats["loss"]) and momentum_ok else "FAIL",
               f"{stats['images_per_s']:.0f} img/s",
               f"batch {ctx.batch} at {ctx.size} px, {ctx.steps} steps, loss {stats['loss']:.3f}, momentum rule "
               f"{'holds' if momentum_ok else 'BROKEN'}{memory}")


def _momentum_rule(moco, compute, images, ctx: Context) -> bool:
    """One forward moves the key encoder to m * theta_k + (1 - m) * theta_q (main_moco.py's rule)."""
    q0, k0 = (enc.conv1.weight.detach().clone() for enc in (moco.encoder_q, moco.encoder_k))
    with torch.no_grad(), compute.autocast(ctx.device):
        moco(*compute.inputs(images, ctx.device))
    expected = moco.m * k0 + (1 - moco.m) * q0
    return torch.allclose(moco.encoder_k.conv1.weight, expected, rtol=1e-5, atol=1e-8)


def _jpegs(folder: Path, n: int) -> List[Path]:
    """``n`` ImageNet-like JPEGs (500 x 375, quality 90) of smooth random content: realistic decode cost."""
    from torchvision.io import encode_jpeg, write_file

    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    paths = []
    for i in range(n):
        small = torch.rand(1, 3, 24, 32, generator=gen)
        big = torch.nn.functional.interpolate(small, size=(375, 500), mode="bicubic", align_corners=False)[0]
        pixels = (big.clamp(0, 1) * 255 + torch.rand(3, 375, 500, generator=gen) * 8).clamp(0, 255).to(torch.uint8)
        paths.append(folder / f"{i}.jpg")
        write_file(str(paths[-1]), encode_jpeg(pixels, quality=90))
    return paths


def data_path(ctx: Context) -> List[Row]:
    """The tensor pipeline on the device and PIL's per CPU core, set against the fastest MoCo step measured."""
    from torchvision.io import read_file

    from moco_bench.core.config import resolved
    from moco_bench.data.images import load_rgb
    from moco_bench.data.transforms import TwoCropsTransform
    from moco_bench.pretrain.data import AUGMENTS, augment_args, tensor_augment

    aug = resolved(recipe(ctx).transform)
    files = _jpegs(ctx.tmp / "jpegs", 16 if ctx.smoke else 128)
    encoded = [read_file(str(p)) for p in files]
    two_views = tensor_augment(aug)
    tensor_ips = len(files) / timed(ctx, two_views, encoded, ctx.device, repeats=2)[0]
    pil = TwoCropsTransform(AUGMENTS[aug["kind"]](**augment_args(aug)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        for path in files:
            pil(load_rgb(path))
        pil_ips = len(files) / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    step = max(ctx.found.values(), default=0.0)
    cores = os.cpu_count() or 1
    decoder = "nvjpeg" if ctx.cuda else "libjpeg-turbo"
    rows = [Row("data: tensor pipeline", "PASS", f"{tensor_ips:.0f} img/s",
                f"500x375 JPEGs: decode ({decoder}) and two MoCo v2 views on {ctx.device}"),
            Row("data: PIL pipeline, one CPU core", "PASS", f"{pil_ips:.0f} img/s",
                "decode and two MoCo v2 views (main_moco.py's loader work per image)")]
    if step:
        need = step / pil_ips
        limit = "compute" if tensor_ips >= step else "data (the tensor pipeline)"
        rows.append(Row("data: what limits a step", "INFO", f"{need:.0f} PIL cores needed",
                        f"fastest step {step:.0f} img/s; this machine has {cores} cores; with the tensor pipeline "
                        f"the limit is {limit}"))
    return rows


def detection(ctx: Context) -> List[Row]:
    runs = [("R50-C4 VOC", "evaluate/voc0712_frcnn_c4_24k.yaml", "fp32"),
            ("R50-FPN COCO", "evaluate/coco_mrcnn_fpn_1x.yaml", "fp32"),
            ("R50-FPN COCO", "evaluate/coco_mrcnn_fpn_1x.yaml", "fp16")]
    rows: List[Row] = []
    for name, config, precision in runs:
        label = f"detectron2 {name} {precision}"
        if precision == "fp16" and not ctx.cuda:
            rows.append(Row(label, "SKIP", "", "detectron2's AMP trainer needs CUDA"))
            continue
        rows += guarded(label, _detect, ctx, label, config, precision)
    return rows


def _detect(ctx: Context, label: str, config: str, precision: str) -> List[Row]:
    """The protocol file on the embedded mini-VOC / mini-COCO: 20 iterations (1 in the smoke run), one trial."""
    from omegaconf import OmegaConf

    from moco_bench.convert import load_backbone
    from moco_bench.data import embedded
    from moco_bench.evaluators.base import EvalContext
    from moco_bench.evaluators.catalog import load_evaluation
    from moco_bench.evaluators.detection.detection import detectron2_transfer

    voc = embedded.build_minivoc(ctx.tmp / "minivoc", n_trainval=8 if ctx.smoke else 32, n_test=20)
    coco = embedded.build_minicoco(voc, ctx.tmp / "minicoco")
    cfg = load_evaluation(project_file(config), ["trials=1", "resources.gpus=1", f"precision={precision}"])
    iters = 1 if ctx.smoke else 20
    short = {"SOLVER": {"MAX_ITER": iters, "IMS_PER_BATCH": 2, "WARMUP_ITERS": 1},
             "TEST": {"PRECISE_BN": {"NUM_ITER": 1}}, "INPUT": {"MASK_FORMAT": "bitmask"}}  # mini-COCO masks: RLE
    if ctx.smoke:
        short["INPUT"].update(MIN_SIZE_TRAIN=[64], MIN_SIZE_TEST=64, MAX_SIZE_TRAIN=96, MAX_SIZE_TEST=96)
    cfg.d2_overrides = OmegaConf.merge(cfg.d2_overrides, short)
    for source, spec in cfg.datasets.sources.items():
        spec.expect = None  # the embedded sets are not the published splits
        if spec.format == "voc":
            spec.root = str(voc)
        else:
            split = "trainval" if "train" in source else "test"
            spec.json, spec.image_root = str(coco / "annotations" / f"instances_{split}.json"), str(coco / split)
    cfg.datasets.train = [str(cfg.datasets.train[0])]
    if cfg.datasets.get("classes"):
        cfg.datasets.classes = list(embedded.FASHION_CLASSES)
    out_dir = ctx.tmp / f"detection-{len(list(ctx.tmp.glob('detection-*')))}"
    out = detectron2_transfer(load_backbone("random:resnet50"), cfg, EvalContext(
        out_dir=out_dir, cache_dir=ctx.tmp / "cache", device=str(ctx.device), workers=2))
    ap50 = out.metrics.get("AP50", out.metrics.get("APbb50"))  # VOC's name, COCO's box AP50
    per_iter = out.details["seconds_per_iter"][0]
    return [Row(label, "PASS" if finite(float(ap50)) else "FAIL",
                f"{per_iter:.3f} s/iter", f"{iters} iterations of 2 images, AP50 {ap50:.1f} (random init), "
                                          f"{out.info['variant']}")]
