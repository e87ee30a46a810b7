"""MoCo's v1/v2 augmentations applied to a whole batch at once (``data.pipeline: batched``): one tensor call per
operation per batch, each image with its own random parameters.

The per-image tensor path (:mod:`moco_bench.data.tensor_augment`) runs torchvision's v2 transforms image by
image; on 2 CPU cores their per-call overhead, not the arithmetic, caps it near 110 images/s at 32 px, and on a
GPU it launches a kernel per op per image. Here every parameter is drawn for the batch from torch's global RNG
(a resumed run replays them) with the distributions of torchvision's transforms, and the operations act on the
stacked batch: random resized crops as per-image boxes through ``torchvision.ops.roi_align``, colour jitter in a
per-image random order, grayscale, Gaussian blur with per-image sigma as one grouped convolution, and flips.
``tests/test_tensor_augment.py`` compares their statistics with the PIL path's.

kornia.augmentation batches the same operations; the ops here are torch's and torchvision's own instead, written
to torchvision's parameter distributions (which the PIL comparison tests hold them to) and adding no dependency.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from moco_bench.core.errors import ConfigError
from moco_bench.data.tensor_augment import blur_kernel_size, collate_encoded, decode

RATIO = (3 / 4, 4 / 3)  # torchvision's RandomResizedCrop default, which both MoCo augmentations use
GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def crop_boxes(heights: torch.Tensor, widths: torch.Tensor, scale, ratio=RATIO, attempts: int = 10) -> torch.Tensor:
    """``(N, 4)`` boxes ``left, top, right, bottom`` in pixels, drawn as ``RandomResizedCrop.get_params`` draws
    them: up to ``attempts`` (area, log-aspect) draws per image, the first that fits taken, else the centre crop
    of the image clamped to ``ratio``."""
    n = len(heights)
    H, W = heights.double()[:, None], widths.double()[:, None]
    area = H * W * torch.empty(n, attempts, dtype=torch.float64).uniform_(*scale)
    aspect = torch.exp(torch.empty(n, attempts, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1])))
    w, h = torch.sqrt(area * aspect).round(), torch.sqrt(area / aspect).round()
    fits = (w > 0) & (w <= W) & (h > 0) & (h <= H)
    first = fits.int().argmax(1, keepdim=True)
    w, h, found = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], fits.any(1)
    H, W = H[:, 0], W[:, 0]
    in_ratio = W / H  # the fallback: the whole image, narrowed to the nearest allowed aspect
    fw = torch.where(in_ratio < ratio[0], W, torch.where(in_ratio > ratio[1], (H * ratio[1]).round(), W))
    fh = torch.where(in_ratio < ratio[0], (W / ratio[0]).round(), H)
    w, h = torch.where(found, w, fw), torch.where(found, h, fh)
    u = torch.rand(n, 2, dtype=torch.float64)
    top = torch.where(found, (u[:, 0] * (H - h + 1)).floor(), ((H - h) / 2).floor())
    left = torch.where(found, (u[:, 1] * (W - w + 1)).floor(), ((W - w) / 2).floor())
    return torch.stack([left, top, left + w, top + h], 1)


def stack_images(images: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 CHW images of any sizes as one float ``[0, 1]`` batch, with each image's height and width. Images
    smaller than the largest are padded by repeating their last row and column, so that a crop touching their
    bottom or right edge reads the edge pixel, as at the top and left edges."""
    heights = torch.tensor([im.shape[-2] for im in images])
    widths = torch.tensor([im.shape[-1] for im in images])
    Hm, Wm = int(heights.max()), int(widths.max())
    if all(im.shape[-2:] == (Hm, Wm) for im in images):
        return torch.stack(list(images)).float().div_(255), heights, widths
    padded = [F.pad(im[None].float(), (0, Wm - im.shape[-1], 0, Hm - im.shape[-2]), mode="replicate")
              for im in images]
    return torch.cat(padded).div_(255), heights, widths


def resized_crops(batch: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's box resampled to ``size x size``: bilinear at pixel centres, averaging ``ceil(box / size)``
    samples per output pixel and axis when shrinking (the antialiasing)."""
    rois = torch.cat([torch.arange(len(boxes), dtype=boxes.dtype)[:, None], boxes], 1).to(batch)
    return roi_align(batch, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (GRAY[0] * r + GRAY[1] * g + GRAY[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp_(0, 1)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    delta = maxc - minc
    s = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    d = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta == 0, torch.zeros_like(h), (h / 6.0) % 1.0)
    return torch.stack([h, s, maxc], 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # the six sectors of the hue circle, each an (r, g, b) choice among v, p, q, t
    table = torch.stack([torch.stack(c, 1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v),
                                                      (v, p, q))], 1)  # N, 6, 3, H, W
    index = i[:, None, None].expand(-1, 1, 3, -1, -1)
    return table.gather(1, index)[:, 0]


def _hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    hsv = _rgb_to_hsv(x)
    hsv[:, 0] = (hsv[:, 0] + shift.view(-1, 1, 1)) % 1.0
    return _hsv_to_rgb(hsv)


_COLOUR_OPS = (
    lambda x, f: (x * f.view(-1, 1, 1, 1)).clamp_(0, 1),  # brightness
    lambda x, f: _blend(x, _gray(x).mean((1, 2, 3), keepdim=True), f),  # contrast
    lambda x, f: _blend(x, _gray(x), f),  # saturation
    _hue,
)


def _jitter_ranges(jitter) -> list:
    """ColorJitter's factor ranges: ``[max(0, 1 - s), 1 + s]`` for brightness, contrast and saturation,
    ``[-h, h]`` for hue; None where the strength is 0 (the op is skipped, as ColorJitter skips it)."""
    b, c, s, h = (float(v) for v in jitter)
    ranges = [(max(0.0, 1 - v), 1 + v) if v else None for v in (b, c, s)]
    if h > 0.5:
        raise ConfigError(f"transform.jitter hue {h}: must lie in [0, 0.5]")
    return ranges + [(-h, h) if h else None]


def colour_jitter(x: torch.Tensor, jitter, applied: torch.Tensor) -> torch.Tensor:
    """torchvision's ColorJitter on the images where ``applied``: each with its own factors, drawn uniformly
    from the ranges, and its own random order of the four operations."""
    ranges = _jitter_ranges(jitter)
    n = len(x)
    factors = [torch.empty(n).uniform_(*r) if r else None for r in ranges]
    order = torch.rand(n, 4).argsort(1)
    for step in range(4):
        for op, r in enumerate(ranges):
            if r is None:
                continue
            idx = ((order[:, step] == op) & applied).nonzero()[:, 0]
            if len(idx):
                on = idx.to(x.device)
                x[on] = _COLOUR_OPS[op](x[on], factors[op][idx].to(x))
    return x


def grayscale(x: torch.Tensor, applied: torch.Tensor) -> torch.Tensor:
    return torch.where(applied.to(x.device).view(-1, 1, 1, 1), _gray(x).expand_as(x), x)


def gaussian_blur(x: torch.Tensor, sigma, applied: torch.Tensor) -> torch.Tensor:
    """torchvision's GaussianBlur (kernel of :func:`blur_kernel_size`, reflect padding) on the images where
    ``applied``, each with sigma drawn uniformly from ``sigma``: one grouped convolution per axis."""
    sigmas = torch.empty(len(x)).uniform_(*sigma)
    idx = applied.nonzero()[:, 0]
    if not len(idx):
        return x
    k = blur_kernel_size(sigma)
    taps = torch.linspace(-(k - 1) / 2, (k - 1) / 2, k)
    kernel = torch.exp(-0.5 * (taps[None] / sigmas[idx, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).to(x).repeat_interleave(x.shape[1], 0)  # one per channel
    on = idx.to(x.device)
    n, c, h, w = x[on].shape
    flat = F.pad(x[on].reshape(1, n * c, h, w), (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=n * c)
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=n * c)
    x[on] = flat.reshape(n, c, h, w)
    return x


def _chance(n: int, p: float) -> torch.Tensor:
    return torch.rand(n) < p


class BatchAugment:
    """One MoCo augmentation of every image of a batch: uint8 CHW images (a list, any sizes, on one device) to
    a normalized float32 ``N x 3 x crop x crop`` batch."""

    def __init__(self, kind: str, *, crop: int, scale, jitter, grayscale_p: float, mean, std,
                 jitter_p: Optional[float] = None, blur_sigma=None, blur_p: Optional[float] = None):
        self.kind, self.crop, self.scale, self.jitter = kind, int(crop), tuple(scale), list(jitter)
        self.grayscale_p, self.jitter_p, self.blur_sigma, self.blur_p = grayscale_p, jitter_p, blur_sigma, blur_p
        self.mean, self.std = torch.tensor(list(mean)).view(1, 3, 1, 1), torch.tensor(list(std)).view(1, 3, 1, 1)
        _jitter_ranges(jitter)

    def __call__(self, images) -> torch.Tensor:
        batch, heights, widths = images if isinstance(images, tuple) else stack_images(images)
        n = len(batch)
        x = resized_crops(batch, crop_boxes(heights, widths, self.scale), self.crop)
        if self.kind == "moco_v1":  # crop, grayscale, jitter, flip
            x = colour_jitter(grayscale(x, _chance(n, self.grayscale_p)), self.jitter, torch.ones(n, dtype=bool))
        else:  # crop, jitter (p), grayscale (p), blur (p), flip
            x = colour_jitter(x, self.jitter, _chance(n, self.jitter_p))
            x = grayscale(x, _chance(n, self.grayscale_p))
            x = gaussian_blur(x, self.blur_sigma, _chance(n, self.blur_p))
        x = torch.where(_chance(n, 0.5).to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
        return (x - self.mean.to(x)) / self.std.to(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind}, crop={self.crop})"


def _v1(*, crop: int, scale, grayscale_p: float, jitter, mean, std) -> BatchAugment:
    return BatchAugment("moco_v1", crop=crop, scale=scale, jitter=jitter, grayscale_p=grayscale_p, mean=mean, std=std)


def _v2(*, crop: int, scale, jitter, jitter_p: float, grayscale_p: float, blur_sigma, blur_p: float, mean,
        std) -> BatchAugment:
    return BatchAugment("moco_v2", crop=crop, scale=scale, jitter=jitter, grayscale_p=grayscale_p, mean=mean, std=std,
                        jitter_p=jitter_p, blur_sigma=blur_sigma, blur_p=blur_p)


def moco_batch_augment(kind: str, **kwargs) -> Callable:
    """The MoCo ``kind`` augmentation of a batch; exactly the keyword arguments of ``moco_v1_augment`` /
    ``moco_v2_augment``, as :func:`moco_bench.data.tensor_augment.moco_tensor_augment`."""
    if kind not in ("moco_v1", "moco_v2"):
        raise ConfigError(f"transform.kind {kind!r}: expected one of moco_v1, moco_v2")
    return (_v1 if kind == "moco_v1" else _v2)(**kwargs)


class BatchTwoCrops:
    """The query and key batches of a batch of encoded images: decoded once on ``device``, stacked once, then
    augmented twice as a batch (the batched counterpart of ``TensorTwoCrops``). On a GPU it runs in the step;
    on the CPU in the loader workers, as :class:`CollateTwoCrops`."""

    def __init__(self, augment: BatchAugment):
        self.augment = augment

    def __call__(self, encoded: Sequence[torch.Tensor], device,
                 names: Optional[Sequence[str]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        stacked = stack_images(decode(encoded, device, names))
        return self.augment(stacked), self.augment(stacked)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.augment!r})"


class CollateTwoCrops:
    """A DataLoader ``collate_fn`` that makes both views of a batch of :class:`EncodedImages` items in the
    worker: on CPU cores the augmentation then overlaps the previous step instead of running before it, and a
    worker's one thread never waits on a core the step's threads hold. Module-level, so workers can pickle it;
    the workers draw from torch's RNG, seeded from the main process's at each epoch, so runs replay."""

    def __init__(self, two: BatchTwoCrops):
        self.two = two

    def __call__(self, batch):
        encoded, labels = collate_encoded(batch)
        return list(self.two(encoded, "cpu")), labels
