"""MoCo's pretraining data path on tensors: DataLoader workers only read file bytes; decoding (nvjpeg on CUDA,
libjpeg-turbo on the CPU) and the v1/v2 augmentations run batched on the training device.

The PIL path (:mod:`moco_bench.data.transforms`) decodes and augments in workers, one CPU core per image, which
caps a fast GPU at the loader's speed. This path takes the same keyword arguments and applies the same random
operations in the same order, drawn from torch's global RNG, so a resumed run replays them; the statistics of
the two paths are compared in ``tests/test_tensor_augment.py`` and their speeds in
``benchmarks/bench_datapath.py``.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from moco_bench.core.errors import ConfigError, DataError

_JPEG_MAGIC = [0xFF, 0xD8]


def _reason(exc: Exception) -> str:
    """torchvision's C++ message without its source location (``decode_jpeg, /.../decode_jpeg.cpp:171, ...``)."""
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    return re.sub(r"^\w+, \S+:\d+, ", "", first)


class EncodedImages(Dataset):
    """``(file bytes as a 1-D uint8 tensor, label)`` for each ``(path, label)`` of a reader's ``samples``: the
    workers read files and nothing else, so decoding can run batched on the GPU (:func:`decode`)."""

    def __init__(self, images: Dataset):
        self.samples = list(images.samples)

    @property
    def images(self) -> list:
        return [path for path, _ in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            data = read_file(str(path))
        except RuntimeError as e:
            raise DataError(f"{path}: unreadable image file ({_reason(e)})") from None
        # read_file maps the file; a worker sending that storage to the main process fails on the closed file
        # descriptor (torch's file_descriptor sharing) and the DataLoader waits forever. A copy in ordinary
        # memory is sent as any tensor is.
        return data.clone(), label


def collate_encoded(batch) -> Tuple[list, torch.Tensor]:
    """A batch of :class:`EncodedImages` items: the byte tensors as a list (their lengths differ), the labels
    as one LongTensor. Module-level, so that DataLoader workers can pickle it."""
    return [data for data, _ in batch], torch.tensor([label for _, label in batch], dtype=torch.long)


def _decode_cpu(data: torch.Tensor, name: str) -> torch.Tensor:
    """One image of any format torchvision reads, decoded on the CPU to 8-bit RGB (16-bit PNGs scaled)."""
    try:
        image = decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as e:
        raise DataError(f"{name}: cannot decode the image ({_reason(e)})") from None
    return image if image.dtype == torch.uint8 else F.to_dtype(image, torch.uint8, scale=True)


def _is_jpeg(data: torch.Tensor) -> bool:
    return data[:2].tolist() == _JPEG_MAGIC


def _decode_one(data: torch.Tensor, device: torch.device, name: str) -> torch.Tensor:
    """One image: a JPEG on ``device`` if its decoder takes it, anything else and a refused JPEG on the CPU."""
    if _is_jpeg(data):
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            pass
    return _decode_cpu(data, name).to(device, non_blocking=True)


def decode(encoded: Sequence[torch.Tensor], device, names: Optional[Sequence[str]] = None) -> list:
    """uint8 CHW RGB tensors on ``device``, one per encoded image (grayscale and CMYK come out as RGB).

    The JPEGs (FF D8) are decoded in one batched call on ``device`` (nvjpeg on CUDA, libjpeg-turbo on the
    CPU); other formats on the CPU, then moved. When the batched call fails (nvjpeg refuses CMYK; a file is
    corrupt), its images are decoded one by one, on the CPU where the device decoder refuses one, so that only
    an image no decoder reads is an error, naming its file: ``names`` (the files, in batch order), or without
    them the image's position in the batch.
    """
    device = torch.device(device)
    jpegs = [i for i, data in enumerate(encoded) if _is_jpeg(data)]
    out: list = [None] * len(encoded)
    if jpegs:
        try:
            for i, image in zip(jpegs, decode_jpeg([encoded[i] for i in jpegs], mode=ImageReadMode.RGB,
                                                   device=device)):
                out[i] = image
        except RuntimeError:
            pass
    for i, image in enumerate(out):
        if image is None:
            name = names[i] if names is not None else f"image {i} of a batch of {len(encoded)}"
            out[i] = _decode_one(encoded[i], device, name)
    return out


def blur_kernel_size(sigma: Sequence[float]) -> int:
    """The odd kernel side that covers +-3 sigma of the largest sigma drawn. PIL's blur (the PIL path's
    ``PILGaussianBlur``) needs no size; torchvision's Gaussian kernel is cut at its edges, and at 3 sigma it
    keeps 99.7% of the Gaussian's weight (13 taps for MoCo v2's sigma up to 2)."""
    return 2 * math.ceil(3 * max(float(s) for s in sigma)) + 1


def _crop_to_float(crop: int, scale) -> list:
    """Random-resized crop on the uint8 image (the crop is smaller than the image: less to convert), then
    float in [0, 1]. Antialiased, as PIL's resize of the PIL path is."""
    return [v2.RandomResizedCrop(int(crop), scale=tuple(scale), antialias=True), v2.ToDtype(torch.float32, scale=True)]


def _tensor_v1(*, crop: int, scale, grayscale_p: float, jitter, mean, std) -> v2.Compose:
    """MoCo v1 (``moco_v1_augment``): crop, grayscale, colour jitter, flip."""
    return v2.Compose([
        *_crop_to_float(crop, scale),
        v2.RandomGrayscale(p=grayscale_p),
        v2.ColorJitter(*jitter),
        v2.RandomHorizontalFlip(),
        v2.Normalize(mean=list(mean), std=list(std)),
    ])


def _tensor_v2(*, crop: int, scale, jitter, jitter_p: float, grayscale_p: float, blur_sigma, blur_p: float,
               mean, std) -> v2.Compose:
    """MoCo v2's aug+ (``moco_v2_augment``): crop, jitter (p), grayscale, blur (p), flip; the blur's sigma drawn
    uniformly from ``blur_sigma`` as PIL's radius is, its kernel sized by :func:`blur_kernel_size`."""
    return v2.Compose([
        *_crop_to_float(crop, scale),
        v2.RandomApply([v2.ColorJitter(*jitter)], p=jitter_p),
        v2.RandomGrayscale(p=grayscale_p),
        v2.RandomApply([v2.GaussianBlur(blur_kernel_size(blur_sigma), sigma=tuple(blur_sigma))], p=blur_p),
        v2.RandomHorizontalFlip(),
        v2.Normalize(mean=list(mean), std=list(std)),
    ])


_KINDS = {"moco_v1": _tensor_v1, "moco_v2": _tensor_v2}


def moco_tensor_augment(kind: str, **kwargs) -> Callable[[torch.Tensor], torch.Tensor]:
    """The MoCo ``kind`` ("moco_v1" or "moco_v2") augmentation on one uint8 CHW tensor on any device, returning
    a normalized float32 CHW tensor. Takes exactly the keyword arguments of ``moco_v1_augment`` /
    ``moco_v2_augment``, so one config block serves both paths."""
    if kind not in _KINDS:
        raise ConfigError(f"transform.kind {kind!r}: expected one of {', '.join(_KINDS)}")
    return _KINDS[kind](**kwargs)


class TensorTwoCrops:
    """The query and key batches from one batch of encoded images: each image decoded once on ``device``, then
    augmented twice, independently (the tensor counterpart of ``TwoCropsTransform``)."""

    def __init__(self, augment: Callable[[torch.Tensor], torch.Tensor]):
        self.augment = augment

    def __call__(self, encoded: Sequence[torch.Tensor], device,
                 names: Optional[Sequence[str]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        views = [(self.augment(image), self.augment(image)) for image in decode(encoded, device, names)]
        return torch.stack([q for q, _ in views]), torch.stack([k for _, k in views])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.augment!r})"
