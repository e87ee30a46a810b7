"""The tensor data paths (moco_bench.data.tensor_augment image by image, moco_bench.data.batch_augment a batch at
once) against the PIL path they replace: decoded pixels against ``load_rgb``, and the distributions of crop area,
colour jitter and blur sigma against ``moco_v2_augment`` with the numbers of pretrain/mocov2_r50_in1k_200ep.yaml
(at a 64 px crop, to stay fast).

The two paths draw from independent seeds: they draw their parameters in the same order, and one seed would
compare them draw by draw rather than as distributions. Quantiles must agree within 4 standard errors of their
difference (estimated without assuming a distribution) plus an allowance for a known systematic difference of
the implementations, and a two-sample Kolmogorov-Smirnov test must not reject at the 0.1% level.
"""

from __future__ import annotations

import inspect
import io
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from scipy import stats
from torch.utils.data import DataLoader
from torchvision.io import read_file

from moco_bench.core.errors import ConfigError, DataError
from moco_bench.data.batch_augment import BatchTwoCrops, moco_batch_augment
from moco_bench.data.imagefolder import ImageFolder
from moco_bench.data.images import load_rgb
from moco_bench.data.tensor_augment import (
    EncodedImages,
    TensorTwoCrops,
    blur_kernel_size,
    collate_encoded,
    decode,
    moco_tensor_augment,
)
from moco_bench.data.transforms import moco_v1_augment, moco_v2_augment

ROOT = Path(__file__).resolve().parents[1]
N = 300  # draws per path and experiment
TENSOR_PATHS = ("tensor", "batched")


def _recipe(name: str) -> dict:
    block = OmegaConf.to_container(OmegaConf.load(ROOT / "pretrain" / name).transform)
    block.pop("kind")
    return {**block, "crop": 64}


V1, V2 = _recipe("mocov1_r50_in1k_200ep.yaml"), _recipe("mocov2_r50_in1k_200ep.yaml")
MEAN, STD = torch.tensor(V2["mean"]).view(3, 1, 1), torch.tensor(V2["std"]).view(3, 1, 1)
PIL_AUGMENTS = {"moco_v1": moco_v1_augment, "moco_v2": moco_v2_augment}


def _chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _draws(path: str, array: np.ndarray, seed: int, n: int = N, kind: str = "moco_v2", **overrides) -> torch.Tensor:
    """``n`` augmentations of one HWC uint8 image by the PIL, the tensor or the batched path (one batch of ``n``
    copies), un-normalized to [0, 1]."""
    kw = {**(V2 if kind == "moco_v2" else V1), **overrides}
    torch.manual_seed(seed)
    if path == "pil":
        augment, image = PIL_AUGMENTS[kind](**kw), Image.fromarray(array)
    elif path == "tensor":
        augment, image = moco_tensor_augment(kind, **kw), _chw(array)
    else:
        views = moco_batch_augment(kind, **kw)([_chw(array)] * n)
    if path != "batched":
        views = torch.stack([augment(image) for _ in range(n)])
    return views * torch.tensor(kw["std"]).view(3, 1, 1) + torch.tensor(kw["mean"]).view(3, 1, 1)


def _both(array: np.ndarray, stat, path: str, **overrides):
    return stat(_draws("pil", array, 1, **overrides)), stat(_draws(path, array, 2, **overrides))


def _quantile_se(x: np.ndarray, q: float) -> float:
    """Standard error of the sample q-quantile without a model: the number of draws below it is binomial with
    sd sqrt(n q (1-q)), so the quantiles one such sd away in rank lie about one standard error away."""
    d = math.sqrt(q * (1 - q) / len(x))
    lo, hi = np.quantile(x, [max(q - d, 0.0), min(q + d, 1.0)])
    return float(hi - lo) / 2


def _assert_same_distribution(pil: np.ndarray, tensor: np.ndarray, what: str, allowance: float) -> None:
    for q in (0.05, 0.5, 0.95):
        a, b = np.quantile(pil, q), np.quantile(tensor, q)
        tol = 4 * math.hypot(_quantile_se(pil, q), _quantile_se(tensor, q)) + allowance
        assert abs(a - b) <= tol, f"{what}: {q:.0%} quantile PIL {a:.4f}, tensor {b:.4f} (tolerance {tol:.4f})"
    p = stats.ks_2samp(pil, tensor).pvalue
    assert p > 1e-3, f"{what}: Kolmogorov-Smirnov rejects equal distributions (p = {p:.2g})"


def _photo(h: int = 48, w: int = 60) -> np.ndarray:
    """Blocks over ramps: edges and gradients, so that decoders and resamplers have something to differ on."""
    yy, xx = np.mgrid[0:h, 0:w]
    blocks = np.kron(np.random.default_rng(0).integers(0, 256, (h // 6, w // 6, 3)), np.ones((6, 6, 1)))
    return ((blocks + np.stack([xx * 4, yy * 5, xx + yy], -1)) % 256).astype(np.uint8)


# 16-bit PNGs: load_rgb rounds v / 257, torchvision keeps the high byte (v >> 8): at most 1 apart.
FORMATS = {"jpeg_rgb": ("RGB", "jpg", 0), "jpeg_l": ("L", "jpg", 0), "jpeg_cmyk": ("CMYK", "jpg", 0),
           "png_rgb": ("RGB", "png", 0), "png_rgba": ("RGBA", "png", 0), "png_l": ("L", "png", 0),
           "png_16bit": ("I;16", "png", 1)}


def _write(path: Path, mode: str) -> Path:
    image = Image.fromarray(_photo())
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 251 + 7)
    elif mode == "RGBA":
        image = Image.fromarray(np.dstack([_photo(), _photo()[..., :1]]))
    else:
        image = image.convert(mode)
    image.save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))
    return path


def test_decode_equals_pil_loader_for_every_format(tmp_path):
    """One mixed batch (the JPEGs are decoded together, the PNGs one by one): every image equals load_rgb's RGB
    array, in batch order; grayscale, CMYK and alpha come out as 3 channels. Measured: identical (the 16-bit
    PNG: 1 apart, the rounding)."""
    paths = [_write(tmp_path / f"{name}.{ext}", mode) for name, (mode, ext, _) in FORMATS.items()]
    decoded = decode([read_file(str(p)) for p in paths], "cpu")
    for (name, (_, _, tol)), path, image in zip(FORMATS.items(), paths, decoded):
        expected = np.asarray(load_rgb(path)).transpose(2, 0, 1).astype(int)
        assert image.dtype == torch.uint8 and image.device.type == "cpu", name
        assert image.shape == expected.shape, f"{name}: {tuple(image.shape)} vs {expected.shape}"
        diff = np.abs(image.numpy().astype(int) - expected).max()
        assert diff <= tol, f"{name}: differs from load_rgb by up to {diff}"


def test_decode_errors_name_the_file(tmp_path):
    good = _write(tmp_path / "good.jpg", "RGB").read_bytes()
    truncated = torch.from_numpy(np.frombuffer(good[:300], np.uint8).copy())
    junk = torch.tensor(list(b"\x89PNG not an image"), dtype=torch.uint8)
    ok = torch.from_numpy(np.frombuffer(good, np.uint8).copy())
    with pytest.raises(DataError, match=r"cut\.jpg: cannot decode the image \(Image is incomplete or truncated"):
        decode([ok, truncated], "cpu", names=["good.jpg", "cut.jpg"])
    with pytest.raises(DataError, match=r"junk\.png: cannot decode"):
        decode([junk, ok], "cpu", names=["junk.png", "good.jpg"])
    with pytest.raises(DataError, match="image 1 of a batch of 2"):
        decode([ok, truncated], "cpu")


def _ramp_area(views: torch.Tensor) -> np.ndarray:
    """The crop's share of a 256x256 image whose R is x and G is y: the output's R (G) range spans 63/64 of the
    crop's width (height), pixel centre to pixel centre; measured within 1.5 px of the true crop side."""
    v = views * 255
    w = (v[:, 0].amax((1, 2)) - v[:, 0].amin((1, 2))) * 64 / 63
    h = (v[:, 1].amax((1, 2)) - v[:, 1].amin((1, 2))) * 64 / 63
    return (w * h / 256 ** 2).numpy()


@pytest.mark.parametrize("path", TENSOR_PATHS)
def test_crop_area_distribution_matches_pil(path):
    """Random-resized crop alone: every crop area within scale (3% for the estimate's 1.5 px per side), the range
    used (draws near both ends), and PIL's distribution (the resamplers agree: no allowance)."""
    yy, xx = np.mgrid[0:256, 0:256]
    ramp = np.stack([xx, yy, np.zeros_like(xx)], -1).astype(np.uint8)
    pil, tensor = _both(ramp, _ramp_area, path, jitter_p=0, grayscale_p=0, blur_p=0)
    lo, hi = V2["scale"]
    for name, areas in (("PIL", pil), ("tensor", tensor)):
        assert lo * 0.97 <= areas.min() and areas.max() <= hi * 1.03, f"{name}: areas {areas.min()}..{areas.max()}"
        assert areas.min() < lo + 0.05 and areas.max() > hi - 0.1, f"{name}: areas {areas.min()}..{areas.max()}"
    _assert_same_distribution(pil, tensor, "crop area", allowance=0.0)
    assert abs(pil.mean() - tensor.mean()) < 4 * math.hypot(pil.std(), tensor.std()) / math.sqrt(N)


def _channel_means(views: torch.Tensor) -> np.ndarray:
    return views.mean((2, 3)).numpy()


@pytest.mark.parametrize("path", TENSOR_PATHS)
def test_color_jitter_distribution_matches_pil(path):
    """Jitter always on a constant colour: per-channel output means agree in quantiles (allowance 0.025: PIL
    rounds to 8 bits after each of the four enhancements and turns hue in 1/256 steps; draws with the same
    parameters differ by up to 6/255) and extremes (0.12: eight PIL-vs-PIL seed pairs differed by up to 0.08)."""
    colour = np.zeros((16, 16, 3), np.uint8) + np.array([180, 120, 60], np.uint8)
    pil, tensor = _both(colour, _channel_means, path, crop=16, jitter_p=1, grayscale_p=0, blur_p=0)
    for c in range(3):
        _assert_same_distribution(pil[:, c], tensor[:, c], f"channel {c} mean", allowance=0.025)
        for ext in (np.min, np.max):
            assert abs(ext(pil[:, c]) - ext(tensor[:, c])) < 0.12, f"channel {c} {ext.__name__}"
    assert (np.ptp(tensor, axis=0) > 0.5).all(), f"jitter barely moved the colour: {np.ptp(tensor, axis=0)}"


def test_brightness_factors_within_range():
    """Brightness alone on grey 100: output / input is the factor, within [1-b, 1+b] (1/100 for PIL's rounding)
    and reaching both ends."""
    grey = np.full((8, 8, 3), 100, np.uint8)
    b = V2["jitter"][0]
    for path, seed in (("pil", 1), ("tensor", 2), ("batched", 3)):
        factors = _draws(path, grey, seed, crop=8, jitter=[b, 0, 0, 0], jitter_p=1, grayscale_p=0,
                         blur_p=0).mean((1, 2, 3)).numpy() * 255 / 100
        assert 1 - b - 0.01 <= factors.min() < 1 - b + 0.02, f"{path}: smallest factor {factors.min():.3f}"
        assert 1 + b - 0.02 < factors.max() <= 1 + b + 0.01, f"{path}: largest factor {factors.max():.3f}"


def _edge() -> np.ndarray:
    edge = np.zeros((64, 64, 3), np.uint8)
    edge[:, 32:] = 255
    return edge


def _edge_sigma(views: torch.Tensor) -> np.ndarray:
    """Sigma of the blur of a vertical step edge: the root second moment of the profile's derivative (the line
    spread function); within 0.015 of the true sigma from 0.6 px up, for PIL's and torchvision's blur alike."""
    profile = views[:, 0, 16:48].mean(1)
    d = profile.diff(dim=1).abs()
    x = torch.arange(d.shape[1], dtype=d.dtype)
    mu = (d * x).sum(1) / d.sum(1)
    return ((d * (x - mu[:, None]) ** 2).sum(1) / d.sum(1)).sqrt().numpy()


@pytest.mark.parametrize("path", TENSOR_PATHS)
def test_blur_sigma_distribution_matches_pil(path):
    """Blur always on, crop = image with scale 1 (the identity): sigma ~ U(blur_sigma) for both paths. Below
    0.6 px the paths differ by design, PIL's extended box blur keeping the variance sigma^2 where a sampled
    Gaussian kernel loses it between pixels (sigma 0.3: 0.29 vs 0.09), so the distributions are compared
    from 0.6 px up: the share there, its uniformity, and PIL against tensor."""
    assert blur_kernel_size(V2["blur_sigma"]) == 13
    pil, tensor = _both(_edge(), _edge_sigma, path, scale=[1.0, 1.0], jitter_p=0, grayscale_p=0, blur_p=1)
    lo, hi = V2["blur_sigma"]
    share = (hi - 0.6) / (hi - lo)
    for name, sigmas in (("PIL", pil), ("tensor", tensor)):
        assert sigmas.max() <= hi + 0.02 and sigmas.max() > hi - 0.1, f"{name}: largest sigma {sigmas.max():.3f}"
        resolved = sigmas[sigmas >= 0.6]
        assert abs(len(resolved) / N - share) < 4 * math.sqrt(share * (1 - share) / N), f"{name}: {len(resolved)}"
        p = stats.kstest(resolved, stats.uniform(0.6, hi - 0.6).cdf).pvalue
        assert p > 1e-3, f"{name}: sigma from 0.6 up is not uniform (p = {p:.2g})"
    _assert_same_distribution(pil[pil >= 0.6], tensor[tensor >= 0.6], "blur sigma", allowance=0.02)


ORANGE = np.array([200, 90, 30], np.uint8)
# (kind, image, settings that isolate one random operation, which draws show it, the share expected)
APPLIED = {
    "v1 grayscale": ("moco_v1", np.zeros((8, 8, 3), np.uint8) + ORANGE, {"crop": 8, "jitter": [0, 0, 0, 0]},
                     lambda v: (v[:, 0] - v[:, 1]).abs().amax((1, 2)) < 1e-3, V1["grayscale_p"]),
    "v2 grayscale": ("moco_v2", np.zeros((8, 8, 3), np.uint8) + ORANGE, {"crop": 8, "jitter_p": 0, "blur_p": 0},
                     lambda v: (v[:, 0] - v[:, 1]).abs().amax((1, 2)) < 1e-3, V2["grayscale_p"]),
    "v2 jitter": ("moco_v2", np.zeros((8, 8, 3), np.uint8) + ORANGE, {"crop": 8, "grayscale_p": 0, "blur_p": 0},
                  lambda v: (v - torch.tensor(ORANGE / 255).view(3, 1, 1)).abs().amax((1, 2, 3)) > 0.5 / 255,
                  V2["jitter_p"]),
    # a blur shows in the edge's sigma from 0.6 px up (test_blur_sigma_distribution_matches_pil): 1.4 of 1.9
    "v2 blur": ("moco_v2", _edge(), {"scale": [1.0, 1.0], "jitter_p": 0, "grayscale_p": 0},
                lambda v: torch.from_numpy(_edge_sigma(v)) >= 0.6, V2["blur_p"] * 1.4 / 1.9),
}


@pytest.mark.parametrize("case", APPLIED)
def test_random_operations_apply_at_their_probability(case):
    """The share of draws a random operation changes is its probability (within 4 binomial standard errors)."""
    kind, image, settings, shows, p = APPLIED[case]
    for path, seed in (("pil", 1), ("tensor", 2), ("batched", 3)):
        share = shows(_draws(path, image, seed, kind=kind, **settings)).float().mean().item()
        assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / N), f"{path}: {share:.3f} of the draws, expected {p:.3f}"


@pytest.mark.parametrize("path", TENSOR_PATHS)
@pytest.mark.parametrize("kind", ["moco_v1", "moco_v2"])
def test_views_shape_dtype_normalization_and_replay(kind, path):
    """Mid-grey with every colour operation off normalizes to (128/255 - mean) / std; two views of a textured
    image differ; the same torch seed replays the same views whatever Python's and numpy's RNGs hold."""
    kw = dict(V1 if kind == "moco_v1" else V2)
    off = {"jitter": [0, 0, 0, 0], "grayscale_p": 0} if kind == "moco_v1" else \
        {"jitter_p": 0, "grayscale_p": 0, "blur_p": 0}
    flat = torch.full((3, 80, 100), 128, dtype=torch.uint8)
    if path == "tensor":
        grey = moco_tensor_augment(kind, **{**kw, **off})(flat)
    else:
        grey = moco_batch_augment(kind, **{**kw, **off})([flat])[0]
    assert grey.shape == (3, 64, 64) and grey.dtype == torch.float32
    assert torch.allclose(grey, ((128 / 255 - MEAN) / STD).expand(3, 64, 64), atol=1e-5)
    two = TensorTwoCrops(moco_tensor_augment(kind, **kw)) if path == "tensor" else \
        BatchTwoCrops(moco_batch_augment(kind, **kw))
    encoded = [torch.tensor(list(_jpeg_bytes(seed)), dtype=torch.uint8) for seed in range(3)]
    runs = []
    for junk in (0, 1):
        random.seed(junk)
        np.random.seed(junk)
        torch.manual_seed(7)
        runs.append(two(encoded, "cpu"))
    (q, k), (q2, k2) = runs
    assert q.shape == k.shape == (3, 3, 64, 64) and q.dtype == torch.float32
    assert all((q[i] - k[i]).abs().mean() > 0.05 for i in range(3)), "the two views of an image are alike"
    assert torch.equal(q, q2) and torch.equal(k, k2)


def _jpeg_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.roll(_photo(72, 90), 17 * seed, axis=1)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_same_keyword_arguments_as_the_pil_augments():
    """Each kind takes exactly its PIL augment's keywords, none with a default; an unknown kind is a ConfigError."""
    for make in (moco_tensor_augment, moco_batch_augment):
        for kind, pil in PIL_AUGMENTS.items():
            kw = {name: (V1 if kind == "moco_v1" else V2)[name] for name in inspect.signature(pil).parameters}
            assert callable(make(kind, **kw))
            for name in kw:
                with pytest.raises(TypeError, match=name):
                    make(kind, **{k: v for k, v in kw.items() if k != name})
        with pytest.raises(TypeError, match="unexpected keyword argument"):
            make("moco_v1", **V2)
        with pytest.raises(ConfigError, match="moco_v3"):
            make("moco_v3", **V2)


@pytest.fixture
def jpeg_folder(tmp_path) -> Path:
    for c, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for i in range(3):
            (tmp_path / name / f"{i}.jpg").write_bytes(_jpeg_bytes(3 * c + i))
    return tmp_path


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_feeds_two_crops(jpeg_folder, workers):
    """Workers return the files' bytes and labels; TensorTwoCrops turns a batch into two normalized batches."""
    dataset = EncodedImages(ImageFolder(jpeg_folder))
    # A timeout: a tensor a worker cannot send (read_file's mapped storage) would otherwise hang the loader.
    loader = DataLoader(dataset, batch_size=3, num_workers=workers, collate_fn=collate_encoded,
                        timeout=60 if workers else 0)
    two = TensorTwoCrops(moco_tensor_augment("moco_v2", **{**V2, "crop": 32}))
    for b, (encoded, labels) in enumerate(loader):
        paths = dataset.images[3 * b:3 * b + 3]
        assert [e.numpy().tobytes() for e in encoded] == [Path(p).read_bytes() for p in paths]
        assert labels.dtype == torch.long and labels.tolist() == [b] * 3
        q, k = two(encoded, "cpu", names=paths)
        assert q.shape == k.shape == (3, 3, 32, 32) and q.dtype == k.dtype == torch.float32
        assert -2.2 < q.min() and q.max() < 2.7  # (0 - mean) / std and (1 - mean) / std
        assert not torch.equal(q, k)
    (jpeg_folder / "dog" / "1.jpg").unlink()
    with pytest.raises(DataError, match=r"dog/1\.jpg: unreadable image file \(\[Errno 2\] No such file"):
        list(loader)


def test_batched_crops_of_mixed_sizes_stay_inside_each_image():
    """A batch of images of three sizes (padded to the largest): every crop of a ramp image reads only that
    image's values, a crop at its bottom-right edge included (the padding repeats the edge, never zeros), and
    the crop areas cover the scale range for each size."""
    sizes = [(40, 50), (64, 64), (60, 48)]
    images, spans = [], []
    for h, w in sizes:
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        images.append(torch.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), torch.full_like(xx, 200)]).to(torch.uint8))
    kw = {**V2, "crop": 24, "jitter_p": 0, "grayscale_p": 0, "blur_p": 0, "mean": [0, 0, 0], "std": [1, 1, 1]}
    torch.manual_seed(0)
    views = moco_batch_augment("moco_v2", **kw)(images * 100).view(100, 3, 3, 24, 24)
    assert views.shape == (100, 3, 3, 24, 24)
    assert torch.allclose(views[:, :, 2], torch.tensor(200 / 255), atol=1e-5), "the constant channel changed"
    assert views.min() >= 0 and views.max() <= 1 + 1e-6
    for s in range(3):
        spans.append(((views[:, s, 0].amax((1, 2)) - views[:, s, 0].amin((1, 2)))
                      * (views[:, s, 1].amax((1, 2)) - views[:, s, 1].amin((1, 2)))).numpy())
        assert spans[-1].min() < 0.3 and spans[-1].max() > 0.7, f"size {sizes[s]}: areas {spans[-1].min()}.."
