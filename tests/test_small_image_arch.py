"""The small-image ResNet (resnet18_small_w0.5, the demo's backbone) through the whole pipeline: built by name in
torchvision's layout, trained by MoCo, written by the pretraining's own checkpoint code, recognized by the converter
(from the checkpoint's record and from the tensors alone), written as torchvision weights that load strictly and
as detectron2 weights that load into the registered small-stem backbone with no missing or unexpected key (and
compute the same maps), and tapped by the evaluators at the demo's pooling."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torchvision
from checkpoint_builders import backbone_state, make_moco_checkpoint, trained_like
from torch import nn

from moco_bench.convert import load_backbone, read_detectron2_pkl, write_outputs
from moco_bench.core.errors import CheckpointError, ConfigError
from moco_bench.evaluators.catalog import load_evaluation
from moco_bench.models import resnets
from moco_bench.models.moco import MoCo, SplitBatchNorm2d
from moco_bench.models.taps import LAYERS, FeatureTaps
from moco_bench.pretrain import checkpoint

ARCH = "resnet18_small_w0.5"
EVALUATE = Path(__file__).resolve().parents[1] / "evaluate"
needs_d2 = pytest.mark.skipif(importlib.util.find_spec("detectron2") is None,
                              reason="detectron2 is not installed (scripts/install_detectron2.py, run by make setup)")


def maps(model: nn.Module, x: torch.Tensor) -> list:
    """conv1 (after ReLU) and layer1..4 outputs of a torchvision-style ResNet."""
    out = [model.maxpool(model.relu(model.bn1(model.conv1(x))))]
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        out.append(stage(out[-1]))
    return out


def images(n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_variant_is_torchvision_resnet18_layout_with_a_small_stem_at_half_width():
    small, tv = resnets.build(ARCH), torchvision.models.resnet18()
    assert list(small.state_dict()) == list(tv.state_dict())  # the same keys, in the same order
    assert (small.conv1.kernel_size, small.conv1.stride, small.conv1.padding) == ((3, 3), (1, 1), (1, 1))
    assert isinstance(small.maxpool, nn.Identity)
    with torch.no_grad():
        shapes = [tuple(m.shape[1:]) for m in maps(small.eval(), images())]
    assert shapes == [(32, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4)]
    assert small.fc.in_features == 256 and resnets.stem_stride(ARCH) == 1 and resnets.stem_stride("resnet18") == 4
    with pytest.raises(ValueError, match=f"unknown architecture 'resnet7'.*{ARCH}"):
        resnets.build("resnet7")


def test_moco_builds_both_encoders_of_the_variant_with_shuffle_bn():
    torch.manual_seed(0)
    moco = MoCo(ARCH, dim=16, K=32, m=0.99, T=0.2, mlp=True, bn_splits=2)
    assert isinstance(moco.encoder_q.bn1, SplitBatchNorm2d) and isinstance(moco.encoder_k.layer4[1].bn2,
                                                                          SplitBatchNorm2d)
    assert moco.state_dict()["encoder_q.fc.0.weight"].shape == (256, 256)
    logits, _ = moco(images(4), images(4))
    assert logits.shape == (4, 33)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A checkpoint written by the pretraining's own checkpoint code for a MoCo of the variant (trained-like BN
    statistics), and its conversion into both outputs."""
    torch.manual_seed(0)
    moco = MoCo(ARCH, dim=16, K=32, m=0.99, T=0.2, mlp=True, bn_splits=2)
    trained_like(moco.encoder_q, 3)
    optimizer = torch.optim.SGD(moco.parameters(), 0.06, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    folder = tmp_path_factory.mktemp("small")
    path = folder / "checkpoint_0002.pth.tar"
    checkpoint.save(path, epoch=3, arch=ARCH, model=moco, optimizer=optimizer, scheduler=scheduler,
                    rng=[checkpoint.rng_state()], config={"model": {"arch": ARCH}})
    backbone = load_backbone(path)
    outputs = write_outputs(backbone, folder / "converted", "both")
    return moco.encoder_q.eval(), backbone, outputs


def test_pretraining_checkpoint_converts_and_loads_strictly_into_the_suites_model(written):
    encoder, backbone, outputs = written
    assert (backbone.arch, backbone.format, backbone.epoch) == (ARCH, "moco", 3)
    assert "the checkpoint's arch field" in backbone.report.arch_note
    assert f"arch: the checkpoint's arch field, which its tensors fit ({ARCH}: moco-bench's small-image" \
        in backbone.report.summary()
    assert json.loads(outputs["report"].read_text())["arch"] == ARCH
    model = resnets.build(ARCH)
    model.fc = nn.Identity()
    model.load_state_dict(torch.load(outputs["torchvision"], weights_only=True), strict=True)
    reference = nn.Sequential(*list(encoder.children())[:-1], nn.Flatten())  # the encoder without its MLP head
    with torch.no_grad():
        assert torch.allclose(model.eval()(images()), reference(images()), atol=1e-5)
        assert torch.allclose(backbone.build_model().eval()(images()), reference(images()), atol=1e-5)


def test_the_tensors_alone_say_which_variant(tmp_path):
    small = trained_like(resnets.build(ARCH), 5)
    bare = tmp_path / "bare.pth"
    torch.save(backbone_state(small), bare)  # no metadata at all
    converted = load_backbone(bare)
    assert converted.arch == ARCH and converted.format == "torchvision"
    note = converted.report.arch_note
    assert note.startswith(f"{ARCH}: moco-bench's small-image resnet18 (3x3 stride-1 stem of 32 channels, no "
                           "max-pool; stage widths 32/64/128/256)") and "recognized from the tensors" in note
    # a record that names another architecture is reported, the tensors decide
    other = make_moco_checkpoint(small, tmp_path / "other.pth.tar", arch="resnet50").path
    converted = load_backbone(other)
    assert converted.arch == ARCH and "arch field says 'resnet50', which its tensors are not" in \
        converted.report.arch_note
    # half width with torchvision's 7x7 stem is no known variant: the stem does not fit
    wrong = resnets.build(ARCH)
    wrong.conv1 = nn.Conv2d(3, 32, 7, 2, 3, bias=False)
    torch.save(backbone_state(wrong), tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match=rf"shape mismatch conv1.weight: checkpoint \[32, 3, 7, 7\] vs {ARCH} "
                                              r"\[32, 3, 3, 3\]"):
        load_backbone(tmp_path / "wrong.pth")


def test_random_baseline_and_demo_pooling():
    a, b = load_backbone(f"random:{ARCH}@1"), load_backbone(f"random:{ARCH}@1")
    assert a.arch == ARCH and a.sha256 == b.sha256 != load_backbone(f"random:{ARCH}@2").sha256
    with torch.random.fork_rng():
        torch.manual_seed(1)
        fresh = resnets.build(ARCH)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in a.state_dict.items())
    model = a.build_model()
    for config, size, dims in (("imagenet_mhead_linear.yaml", 32, [512, 512, 1024, 512, 1024]),
                               ("voc07_svm.yaml", 64, [512, 512, 1024, 512, 1024])):
        pooling = load_evaluation(EVALUATE / "demo" / config).features.pooling
        got = FeatureTaps(model, LAYERS[:5], pooling).dims(size)
        assert [got[f"feature{i}"] for i in range(1, 6)] == dims, config
    assert FeatureTaps(model, ["gap"], {"gap": {"output_size": 1}}).dims(32) == {"gap": 256}


@needs_d2
def test_detectron2_backbone_takes_every_weight_and_computes_the_same_maps(written):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_backbone

    from moco_bench.evaluators.detection import model as d2_model
    from moco_bench.evaluators.detection.backbones import backbone_name

    encoder, backbone, outputs = written
    d2 = get_cfg()
    d2.merge_from_list(d2_model.resnet_options(ARCH) + [
        "MODEL.BACKBONE.NAME", backbone_name(ARCH, "build_resnet_backbone"), "MODEL.BACKBONE.FREEZE_AT", 0,
        "MODEL.RESNETS.NORM", "BN",
        "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"], "MODEL.DEVICE", "cpu"])
    net = build_backbone(d2).eval()
    weights = read_detectron2_pkl(outputs["detectron2"])["model"]
    assert len(weights) == len(backbone.state_dict)
    net.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()}, strict=True)  # no missing/unexpected
    assert {k: v.stride for k, v in net.output_shape().items()} == {"res2": 1, "res3": 2, "res4": 4, "res5": 8}
    with torch.no_grad():
        got, expected = net(images()), maps(encoder, images())[1:]
    for i, name in enumerate(("res2", "res3", "res4", "res5")):
        assert torch.allclose(got[name], expected[i], atol=1e-4), name


@needs_d2
def test_demo_fpn_config_builds_and_places_every_weight(written, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from moco_bench.evaluators.detection import model as d2_model
    from moco_bench.evaluators.detection.detection import build_d2_config

    _, backbone, outputs = written
    cfg = load_evaluation(EVALUATE / "demo" / "voc_detection_fpn.yaml")
    d2, norms = build_d2_config(backbone, cfg, tmp_path, outputs["detectron2"], "cpu", 1)
    assert d2.MODEL.BACKBONE.NAME == "build_small_image_resnet_fpn_backbone"
    assert (d2.MODEL.RESNETS.STEM_OUT_CHANNELS, d2.MODEL.RESNETS.RES2_OUT_CHANNELS) == (32, 32)
    model = build_model(d2)
    assert {k: v.stride for k, v in model.backbone.output_shape().items()} == {"p1": 2, "p2": 4, "p3": 8, "p4": 16}
    with torch.no_grad():  # the top block pools the last level, whatever its name
        levels = model.backbone.eval()(torch.zeros(1, 3, 96, 128))
    assert {k: tuple(v.shape[2:]) for k, v in levels.items()} == {"p1": (48, 64), "p2": (24, 32), "p3": (12, 16),
                                                                   "p4": (6, 8)}
    DetectionCheckpointer(model).load(str(outputs["detectron2"]))
    weights = read_detectron2_pkl(outputs["detectron2"])["model"]
    report = d2_model.check_backbone_loaded(model, weights, str(outputs["detectron2"]))
    assert report["loaded"] == len(weights) and report["placed_under"] == ["backbone.bottom_up"]
    # the FPN level names follow the stem: the demo's levels do not exist for a torchvision stem, and back
    with pytest.raises(ConfigError, match="p1, p2 are not levels of this FPN: a resnet18 .*gives p3, p4, p5, p6"):
        build_d2_config(load_backbone("random:resnet18"), cfg, tmp_path, outputs["detectron2"], "cpu", 1)
    torchvision_levels = load_evaluation(EVALUATE / "demo" / "voc_detection_fpn.yaml", [  # levels of a 7x7 stem
        "d2_overrides.MODEL.FPN.IN_FEATURES=[res2,res3,res4,res5]",
        "d2_overrides.MODEL.RPN.IN_FEATURES=[p2,p3,p4,p5,p6]",
        "d2_overrides.MODEL.ROI_HEADS.IN_FEATURES=[p2,p3,p4,p5]"])
    with pytest.raises(ConfigError, match=f"p5, p6 are not levels of this FPN: a {ARCH} .*gives p0, p1, p2, p3, p4"):
        build_d2_config(backbone, torchvision_levels, tmp_path, outputs["detectron2"], "cpu", 1)
