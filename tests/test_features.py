"""Feature taps and the feature cache: protocol dims, one extraction shared by three evaluators, stale or
truncated caches recomputed, NaN features named, reduced precision."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from checkpoint_builders import DEMO_ARCH
from omegaconf import OmegaConf

from moco_bench import evaluators
from moco_bench.convert import load_backbone
from moco_bench.core.errors import ConfigError, DataError
from moco_bench.data.transforms import eval_transform
from moco_bench.evaluators.base import EvalContext
from moco_bench.evaluators.catalog import load_evaluation
from moco_bench.evaluators.features import check_finite, load_split
from moco_bench.models import resnets
from moco_bench.models.taps import FeatureTaps

EVALUATE = Path(__file__).resolve().parent.parent / "evaluate"
LAYERS = ["feature1", "feature2", "feature3", "feature4", "feature5", "gap"]


def pooling(config):
    return OmegaConf.to_container(load_evaluation(EVALUATE / config).features.pooling)


def test_protocol_pooling_gives_the_published_dims():
    dims = FeatureTaps(torchvision.models.resnet50(), LAYERS, pooling("voc07_svm.yaml")).dims(224)
    assert dims == {"feature1": 9216, "feature2": 9216, "feature3": 8192, "feature4": 9216, "feature5": 8192,
                    "gap": 2048}
    demo = FeatureTaps(resnets.build(DEMO_ARCH), LAYERS, pooling("demo/voc07_svm.yaml")).dims(64)
    assert demo == {"feature1": 512, "feature2": 512, "feature3": 1024, "feature4": 512, "feature5": 1024, "gap": 256}
    with pytest.raises(ConfigError, match="does not fit 64px"):
        FeatureTaps(torchvision.models.resnet18(), ["feature5"], pooling("voc07_svm.yaml")).dims(64)
    with pytest.raises(ConfigError, match="unknown feature layer"):
        FeatureTaps(torchvision.models.resnet18(), ["res5"], pooling("voc07_svm.yaml"))


def test_dims_leaves_every_module_in_its_own_mode():
    """A dry run of the taps does not switch a frozen (eval-mode) backbone inside a fresh taps module to train."""
    resnet = torchvision.models.resnet18().eval()
    taps = FeatureTaps(resnet, ["gap"], {"gap": {"output_size": 1}})
    assert taps.training and not resnet.training
    running = resnet.bn1.running_mean.clone()
    assert taps.dims(64) == {"gap": 512}
    assert taps.training and not any(m.training for m in resnet.modules())
    assert torch.equal(resnet.bn1.running_mean, running)


def test_transform_spec():
    from PIL import Image

    voc = eval_transform({"resize": 64, "square": 64}, [0.5] * 3, [0.5] * 3)
    assert tuple(voc(Image.new("RGB", (128, 96))).shape) == (3, 64, 64)
    with pytest.raises(ConfigError, match="crop or square"):
        eval_transform({"resize": 64}, [0.5] * 3, [0.5] * 3)
    with pytest.raises(ConfigError, match="transform.test.flip"):  # the schema knows every key of the block
        load_evaluation(EVALUATE / "demo/voc07_svm.yaml", ["transform.test.flip=true"])


def _cfg(root, *overrides):
    return load_evaluation(EVALUATE / "demo/voc07_svm.yaml", [f"data.root={root}", *overrides])


def _files(cache):
    return sorted(p.relative_to(cache) for p in cache.rglob("*.npy"))


def test_cache_hit_partial_and_recomputation(minivoc_root, tmp_path):
    backbone, cache = load_backbone(f"random:{DEMO_ARCH}"), tmp_path / "cache"
    first = load_split(backbone, _cfg(minivoc_root), cache, "test", workers=0)
    assert first.cache == {"feature5": "miss"} and first.features["feature5"].shape == (40, 1024)
    assert first.labels.shape == (40, 10) and len(first.images) == 40
    again = load_split(backbone, _cfg(minivoc_root), cache, "test", workers=0)
    assert again.cache == {"feature5": "hit"}
    np.testing.assert_array_equal(again.features["feature5"], first.features["feature5"])
    reference = np.array(first.features["feature5"])

    # another layer joins the same entry; the cached one is not recomputed
    both = load_split(backbone, _cfg(minivoc_root, "features.layers=[feature5,feature3]"), cache, "test", workers=0)
    assert both.cache == {"feature5": "hit", "feature3": "miss"} and len(_files(cache)) == 2

    # a truncated array is recomputed, to the same numbers
    path = next(p for p in cache.rglob("feature5-*.npy"))
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 100)
    fixed = load_split(backbone, _cfg(minivoc_root), cache, "test", workers=0)
    assert fixed.cache["feature5"].startswith("recomputed: feature5-")
    np.testing.assert_allclose(fixed.features["feature5"], reference, rtol=1e-5, atol=1e-6)

    # a manifest written for another checkpoint does not vouch for these files
    manifest = path.parent / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["key"]["checkpoint"] = "0" * 64
    manifest.write_text(json.dumps(doc))
    stale = load_split(backbone, _cfg(minivoc_root), cache, "test", workers=0)
    assert stale.cache["feature5"].startswith("recomputed: manifest names another checkpoint")

    # another checkpoint has its own entry
    other = load_split(load_backbone(f"random:{DEMO_ARCH}@1"), _cfg(minivoc_root), cache, "test", workers=0)
    assert other.cache == {"feature5": "miss"}
    assert not np.allclose(other.features["feature5"], reference)


def test_one_extraction_for_three_evaluators(minivoc_root, tmp_path):
    backbone = load_backbone(f"random:{DEMO_ARCH}")
    ctx = EvalContext(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", workers=1)
    configs = [("demo/voc07_svm.yaml", []), ("demo/voc07_svm_vissl.yaml", []),
               ("demo/voc07_lowshot_svm.yaml", ["lowshot.k=[1,2]", "lowshot.seeds=[1]"])]
    caches = []
    for name, extra in configs:
        cfg = load_evaluation(EVALUATE / name, [f"data.root={minivoc_root}", *extra])
        out = evaluators.get(cfg.evaluator)(backbone, cfg, ctx)
        caches.append(out.info["feature_cache"])
    assert caches[0] == {"train": {"feature5": "miss"}, "test": {"feature5": "miss"}}
    assert caches[1] == caches[2] == {"train": {"feature5": "hit"}, "test": {"feature5": "hit"}}
    assert len(_files(tmp_path / "cache")) == 2  # trainval and test, feature5 each: one backbone pass per split


def test_nan_features_name_the_images(minivoc_root, tmp_path):
    backbone = load_backbone(f"random:{DEMO_ARCH}")
    backbone.state_dict = dict(backbone.state_dict)
    var = backbone.state_dict["bn1.running_var"].clone()
    var[0] = -1.0  # sqrt of a negative variance: NaN in every image's features
    backbone.state_dict["bn1.running_var"] = var
    for runtime in ("auto", "mkldnn", "inductor"):  # the folding runtimes fall back to eager, which reports it
        with pytest.raises(DataError, match=r"features of 40 image\(s\) contain NaN or Inf: .*000041\.jpg"):
            load_split(backbone, _cfg(minivoc_root, f"features.runtime={runtime}"), tmp_path / "cache", "test",
                       workers=0)
    assert _files(tmp_path / "cache") == []  # nothing half-written is left to be mistaken for a cache
    feats = np.ones((4, 3), dtype=np.float32)
    feats[2, 1] = np.nan
    with pytest.raises(DataError, match=r"1 image\(s\) contain NaN or Inf: c\.jpg$"):
        check_finite(feats, ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], "test split")


def test_bf16_channels_last_is_its_own_entry_and_close_to_fp32(minivoc_root, tmp_path):
    backbone, cache = load_backbone(f"random:{DEMO_ARCH}"), tmp_path / "cache"
    fp32 = load_split(backbone, _cfg(minivoc_root), cache, "test", workers=0)
    bf16 = load_split(backbone, _cfg(minivoc_root, "features.precision=bf16", "features.channels_last=true"),
                      cache, "test", workers=0)
    assert bf16.cache == {"feature5": "miss"}
    a, b = np.asarray(fp32.features["feature5"]), np.asarray(bf16.features["feature5"])
    assert np.isfinite(b).all() and not np.array_equal(a, b)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.99


def test_prepared_runtime_equals_eager_to_rounding(minivoc_root, tmp_path):
    """The channels_last (the CPU default), mkldnn and inductor (BatchNorm folded, prepacked weights) runtimes
    against the eager NCHW network, on a backbone whose BatchNorm statistics are far from the identity, every
    pooled layer of the SVM protocol."""
    from moco_bench.models.inference import choose_runtime, prepare

    backbone = load_backbone(f"random:{DEMO_ARCH}")
    g = np.random.default_rng(0)
    for name, t in backbone.state_dict.items():
        if name.endswith(("running_mean", "running_var", "bn1.weight", "bn2.weight")):
            values = g.normal(0, 0.2, t.shape) if name.endswith("mean") else g.uniform(0.5, 1.5, t.shape)
            t.copy_(t.new_tensor(values))
    layers = "features.layers=[feature1,feature3,feature5]"
    runs = {r: load_split(backbone, _cfg(minivoc_root, layers, f"features.runtime={r}"), tmp_path / r, "test",
                          workers=0) for r in ("eager", "channels_last", "mkldnn", "inductor", "auto")}
    assert {r: run.runtime for r, run in runs.items()} == {"eager": "eager", "channels_last": "channels_last",
                                                          "mkldnn": "mkldnn", "inductor": "inductor",
                                                          "auto": "channels_last"}
    for layer in ("feature1", "feature3", "feature5"):
        a = np.asarray(runs["eager"].features[layer])
        for other in ("channels_last", "mkldnn", "inductor"):
            b = np.asarray(runs[other].features[layer])
            assert other == "channels_last" or not np.array_equal(a, b), other  # folded BatchNorm: other sums ...
            np.testing.assert_allclose(b, a, rtol=0, atol=2e-5 * np.abs(a).max())  # ... the same numbers to rounding
    model, runtime = prepare(backbone.build_model(), "cpu", "auto")
    assert runtime == "channels_last" and model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert choose_runtime("auto", "cpu", "bf16") == "channels_last"
    assert choose_runtime("auto", "cuda", "fp32") == "eager"
    assert choose_runtime("auto", "cuda", "fp32", channels_last=True) == "channels_last"
    assert choose_runtime("eager", "cpu", "fp32", channels_last=True) == "channels_last"
    with pytest.raises(ConfigError, match="mkldnn runs fp32 on a CPU"):
        choose_runtime("mkldnn", "cpu", "bf16")
