"""Image transforms of the protocols: MoCo v1/v2 pretraining augmentations, the linear protocols' training
augmentation and the evaluation transform.

Every number (crop size, scales, jitter strengths, probabilities, mean/std) is an argument without a default;
the configs under pretrain/ and evaluate/ hold the protocol values with their sources.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

from moco_bench.core.errors import ConfigError


def _normalize(mean: Sequence[float], std: Sequence[float]) -> list:
    return [T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]


def eval_transform(spec: Mapping, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """Shorter edge to ``resize``, then an optional center ``crop`` and/or ``square`` resize to
    ``square x square``, then tensor + normalization. The kNN and linear protocols resize + crop; the VOC07 SVM
    anchors resize + square."""
    if not spec.get("crop") and not spec.get("square"):
        raise ConfigError("transform.test: give crop or square, so that every image has the same size")
    mode = T.InterpolationMode(spec.get("interpolation") or "bilinear")  # the transfer suite's source: bicubic
    ops: list = [T.Resize(int(spec["resize"]), interpolation=mode)]
    if spec.get("crop"):
        ops.append(T.CenterCrop(int(spec["crop"])))
    if spec.get("square"):
        ops.append(T.Resize((int(spec["square"]), int(spec["square"])), interpolation=mode))
    return T.Compose(ops + _normalize(mean, std))


def eval_size(spec: Mapping) -> int:
    """The side of the square images :func:`eval_transform` produces."""
    return int(spec.get("square") or spec["crop"])


class Lighting:
    """AlexNet-style PCA lighting noise on a ``[0, 1]`` RGB tensor (mmselfsup's multi-head train pipeline).

    Adds ``eigvec @ (alpha * eigval)`` to every pixel with ``alpha ~ N(0, alphastd)`` per component; the
    eigen-decomposition of ImageNet's RGB covariance comes from the config.
    """

    def __init__(self, alphastd: float, eigval: Sequence[float], eigvec: Sequence[Sequence[float]]):
        self.alphastd = float(alphastd)
        self.eigval = torch.tensor(list(eigval), dtype=torch.float32)
        self.eigvec = torch.tensor([list(r) for r in eigvec], dtype=torch.float32)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.alphastd == 0:
            return img
        alpha = torch.randn(3) * self.alphastd
        rgb = self.eigvec @ (alpha * self.eigval)
        return img + rgb.view(3, 1, 1).to(img.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alphastd={self.alphastd})"


def linear_train_transform(spec: Mapping, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """The linear protocols' training augmentation: a crop (random-resized, or resize + center crop + random
    crop as mmselfsup's Places205), flip, optional colour jitter and PCA lighting, normalization."""
    if spec["kind"] == "random_resized_crop":
        ops = [T.RandomResizedCrop(int(spec["crop"]), scale=tuple(spec["scale"]))]
    elif spec["kind"] == "resize_random_crop":
        ops = [T.Resize(int(spec["resize"])), T.CenterCrop(int(spec["resize"])), T.RandomCrop(int(spec["crop"]))]
    else:
        raise ConfigError(f"transform.train.kind {spec['kind']!r}: expected random_resized_crop or resize_random_crop")
    ops.append(T.RandomHorizontalFlip())
    if spec.get("jitter"):
        ops.append(T.ColorJitter(*[float(v) for v in spec["jitter"]]))
    ops.append(T.ToTensor())
    lighting: Optional[Mapping] = spec.get("lighting")
    if lighting:
        ops.append(Lighting(lighting["alphastd"], lighting["eigval"], lighting["eigvec"]))
    ops.append(T.Normalize(mean=list(mean), std=list(std)))
    return T.Compose(ops)


def moco_v1_augment(*, crop: int, scale, grayscale_p: float, jitter, mean, std) -> T.Compose:
    """MoCo v1's augmentation (moco: main_moco.py, not --aug-plus)."""
    return T.Compose([
        T.RandomResizedCrop(crop, scale=tuple(scale)),
        T.RandomGrayscale(p=grayscale_p),
        T.ColorJitter(*jitter),
        T.RandomHorizontalFlip(),
        *_normalize(mean, std),
    ])


class PILGaussianBlur:
    """PIL's Gaussian blur with a radius drawn uniformly from ``sigma``: MoCo v2's blur (moco/loader.py). PIL sizes
    the kernel from the radius, so no kernel size is needed at any crop size. The radius is drawn from torch's RNG,
    like torchvision's own random transforms, so that a resumed run replays it."""

    def __init__(self, sigma: Sequence[float]):
        self.sigma = tuple(sigma)

    def __call__(self, img: Image.Image) -> Image.Image:
        radius = torch.empty(1).uniform_(*self.sigma).item()
        return img.filter(ImageFilter.GaussianBlur(radius=radius))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


def moco_v2_augment(*, crop: int, scale, jitter, jitter_p: float, grayscale_p: float, blur_sigma, blur_p: float,
                    mean, std) -> T.Compose:
    """MoCo v2's aug+ (moco: main_moco.py --aug-plus)."""
    return T.Compose([
        T.RandomResizedCrop(crop, scale=tuple(scale)),
        T.RandomApply([T.ColorJitter(*jitter)], p=jitter_p),
        T.RandomGrayscale(p=grayscale_p),
        T.RandomApply([PILGaussianBlur(blur_sigma)], p=blur_p),
        T.RandomHorizontalFlip(),
        *_normalize(mean, std),
    ])


class TwoCropsTransform:
    """Two independent augmentations of one image: the query and the key."""

    def __init__(self, base: Callable):
        self.base = base

    def __call__(self, x):
        return [self.base(x), self.base(x)]
