"""Image transforms of the protocols: MoCo v1/v2 pretraining augmentations and the evaluation transforms.

Every number (crop size, scales, jitter strengths, probabilities, mean/std) is an argument; the configs
under pretrain/ and evaluate/ hold the protocol values with their sources.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _normalize(mean: Sequence[float], std: Sequence[float]) -> list:
    return [T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]


def eval_transform(resize: int, crop: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, square_resize: bool = False):
    """Resize then center-crop (the linear/kNN val transform); ``square_resize`` resizes to ``(resize, resize)``
    instead of the shorter side. The VOC07 SVM transform (shorter side 256, then 224x224, no crop) is built
    by ``moco_bench.evaluators.features.build_transform``."""
    first = T.Resize((resize, resize) if square_resize else resize)
    return T.Compose([first, T.CenterCrop(crop), *_normalize(mean, std)])


def train_linear_transform(crop: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, scale=(0.08, 1.0)):
    """RandomResizedCrop + flip: main_lincls' training transform."""
    return T.Compose([T.RandomResizedCrop(crop, scale=tuple(scale)), T.RandomHorizontalFlip(),
                      *_normalize(mean, std)])


def moco_v1_augment(crop: int, scale=(0.2, 1.0), grayscale_p=0.2, jitter=(0.4, 0.4, 0.4, 0.4),
                    mean=IMAGENET_MEAN, std=IMAGENET_STD):
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

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = tuple(sigma)

    def __call__(self, img: Image.Image) -> Image.Image:
        radius = torch.empty(1).uniform_(*self.sigma).item()
        return img.filter(ImageFilter.GaussianBlur(radius=radius))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


def moco_v2_augment(crop: int, scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, grayscale_p=0.2,
                    blur_sigma=(0.1, 2.0), blur_p=0.5, mean=IMAGENET_MEAN, std=IMAGENET_STD):
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
