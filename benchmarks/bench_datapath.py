"""MoCo's data path on the CPU, per core (``make bench``): images per second of each stage, PIL (the DataLoader
workers' path, moco_bench.data.transforms) against torchvision's tensor ops (moco_bench.data.tensor_augment).

Stages, on ImageNet-like JPEGs (about 500x375, quality 90) held in memory: decode (PIL's ``Image.open`` +
``convert("RGB")`` against ``torchvision.io.decode_jpeg``, both libjpeg-turbo), random-resized crop to 224 (scale
0.2-1), colour jitter (0.4, 0.4, 0.4, 0.1, always applied) and MoCo v2's blur (sigma ~ U(0.1, 2), always applied)
on 224 crops, and the whole MoCo v2 two-view augmentation from JPEG bytes (pretrain/mocov2_r50_in1k_200ep.yaml).
The tensor path is meant for the GPU (nvjpeg, CUDA kernels); its CPU rows say what it costs where no GPU helps.
One process, one thread (``torch.set_num_threads(1)``; PIL is single-threaded): a loader core's rate. Each rate
is the best of ``--repeats`` runs of at least ``--seconds``, since other processes on a shared machine only ever
slow a run down. From the whole-pipeline rates, the loader cores needed for 1,500 images/s (MoCo v2 on 8 V100s:
1.28 M images x 200 epochs in ~53 h is ~1,350 images/s). No target: exits 0.
Usage: ``python benchmarks/bench_datapath.py [--seconds 1 --repeats 3 --images 12]``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms import transforms as T
from torchvision.transforms import v2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from moco_bench.data.tensor_augment import TensorTwoCrops, blur_kernel_size, moco_tensor_augment  # noqa: E402
from moco_bench.data.transforms import PILGaussianBlur, TwoCropsTransform, moco_v2_augment  # noqa: E402
from moco_bench.pretrain.schema import load_recipe  # noqa: E402

PHOTOS = Path("/usr/share/doc/labelme-examples/examples")  # Debian's labelme-examples: VOC-style photos
TARGET = 1500  # images/s


def _jpeg(image: Image.Image) -> bytes:
    """The image, its longer side brought to 500 px (ImageNet's typical 500x375), as a quality-90 JPEG."""
    image = image.convert("RGB")
    scale = 500 / max(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def photos(count: int) -> tuple:
    """Up to ``count`` distinct photos from labelme-examples (the annotated originals, not the visualizations)."""
    seen, out = set(), []
    for path in sorted(PHOTOS.glob("*/data_annotated/*.jpg")) if PHOTOS.is_dir() else []:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest not in seen and len(out) < count:
            seen.add(digest)
            out.append(_jpeg(Image.open(path)))
    return out, f"{len(out)} photos from {PHOTOS} (*/data_annotated/*.jpg), resized to 500 px wide, quality 90"


def smooth_noise(count: int) -> tuple:
    """Stand-ins where no photos are installed: smooth colour fields with fine grain, so that a JPEG holds about
    as much detail (and costs as much to decode) as a photo."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(count):
        coarse = torch.rand(1, 3, 12, 16, generator=g) * 255
        field = torch.nn.functional.interpolate(coarse, size=(375, 500), mode="bicubic", align_corners=False)[0]
        grain = torch.randn(3, 375, 500, generator=g) * 12
        out.append(_jpeg(Image.fromarray((field + grain).clamp(0, 255).byte().permute(1, 2, 0).numpy())))
    return out, f"{count} synthetic 500x375 images (smooth colour fields + grain), quality 90; {PHOTOS} is absent"


def rate(fn, items: list, seconds: float, repeats: int) -> float:
    """Items per second: ``fn`` over ``items`` in rounds until ``seconds`` have passed; the best of ``repeats``."""
    best = 0.0
    for _ in range(repeats):
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for item in items:
                fn(item)
            done += len(items)
        best = max(best, done / (time.perf_counter() - start))
    return best


def stages(encoded: list, recipe: dict) -> list:
    """(name, PIL function, PIL inputs, tensor function, tensor inputs) per stage; the inputs are what the stage
    receives in its pipeline (decoded images for the crop, 224 crops for jitter and blur; float for the tensors)."""
    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in encoded]
    pil_images = [Image.open(io.BytesIO(b)).convert("RGB") for b in encoded]
    tensors = [decode_jpeg(d, mode=ImageReadMode.RGB) for d in data]
    pil_crops = [T.CenterCrop(224)(T.Resize(256)(im)) for im in pil_images]
    float_crops = [v2.ToDtype(torch.float32, scale=True)(v2.CenterCrop(224)(v2.Resize(256)(t))) for t in tensors]
    jitter, sigma = recipe["jitter"], recipe["blur_sigma"]
    two_pil = TwoCropsTransform(moco_v2_augment(**recipe))
    two_tensor = TensorTwoCrops(moco_tensor_augment("moco_v2", **recipe))
    return [
        ("decode JPEG", lambda b: Image.open(io.BytesIO(b)).convert("RGB"), encoded,
         lambda d: decode_jpeg(d, mode=ImageReadMode.RGB), data),
        ("random-resized crop to 224", T.RandomResizedCrop(224, scale=tuple(recipe["scale"])), pil_images,
         v2.RandomResizedCrop(224, scale=tuple(recipe["scale"]), antialias=True), tensors),
        (f"colour jitter {tuple(jitter)}", T.ColorJitter(*jitter), pil_crops, v2.ColorJitter(*jitter), float_crops),
        (f"blur sigma U{tuple(sigma)}", PILGaussianBlur(sigma), pil_crops,
         v2.GaussianBlur(blur_kernel_size(sigma), sigma=tuple(sigma)), float_crops),
        ("MoCo v2, two views from JPEG bytes", lambda b: two_pil(Image.open(io.BytesIO(b)).convert("RGB")), encoded,
         lambda d: two_tensor([d], "cpu"), data),
    ]


def file_read_rate(encoded: list, seconds: float, repeats: int) -> float:
    """What the tensor path leaves to a loader core when the GPU decodes: reading the files (page cache)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"{i}.jpg" for i in range(len(encoded))]
        for path, data in zip(paths, encoded):
            path.write_bytes(data)
        return rate(lambda p: read_file(str(p)), [str(p) for p in paths], seconds, repeats)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="least time per measured run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=12, help="how many distinct images")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    encoded, source = photos(args.images)
    if len(encoded) < 3:
        encoded, source = smooth_noise(args.images)
    sizes = sorted({Image.open(io.BytesIO(b)).size for b in encoded})
    print(f"images: {source}; sizes {', '.join(f'{w}x{h}' for w, h in sizes)}; mean "
          f"{np.mean([len(b) for b in encoded]) / 1024:.0f} KiB")
    recipe = OmegaConf.to_container(load_recipe(REPO / "pretrain/mocov2_r50_in1k_200ep.yaml").transform)
    recipe.pop("kind")
    print(f"torch {torch.__version__}, 1 thread; recipe pretrain/mocov2_r50_in1k_200ep.yaml (crop {recipe['crop']})\n")
    print(f"{'stage (images/s per core)':38s} {'PIL':>8s} {'tensor':>8s} {'tensor/PIL':>11s}")
    for name, pil_fn, pil_in, tensor_fn, tensor_in in stages(encoded, recipe):
        pil, tensor = (rate(pil_fn, pil_in, args.seconds, args.repeats),
                       rate(tensor_fn, tensor_in, args.seconds, args.repeats))
        print(f"{name:38s} {pil:8.1f} {tensor:8.1f} {tensor / pil:10.2f}x", flush=True)
    whole = {"PIL": pil, "tensor ops on the CPU": tensor}  # the last stage: the whole two-view augmentation
    reads = file_read_rate(encoded, args.seconds, args.repeats)
    print(f"{'file read only (read_file)':38s} {'':8s} {reads:8.0f}")
    print(f"\nloader cores for {TARGET:,} images/s, two views each (MoCo v2 on 8 V100s; one V100: {TARGET / 8:.0f}):")
    for path, per_core in whole.items():
        print(f"  {path:28s} {TARGET / per_core:6.1f} cores ({TARGET / 8 / per_core:.1f} per V100)")
    print(f"  {'tensor path, GPU decoding':28s} {TARGET / reads:6.2f} cores to read the files (decoding and "
          "augmenting on the GPU: not measured here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
