"""The checkpoint converter: every input layout, both outputs, the key report, and bad input."""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from checkpoint_builders import (
    BUILDERS,
    backbone_state,
    make_moco_checkpoint,
    make_solo_learn_checkpoint,
    make_torchvision_checkpoint,
    trained_like,
)
from torch import nn

from moco_bench.convert import (
    ARCHS,
    detect_arch,
    load_backbone,
    read_detectron2_pkl,
    write_detectron2,
    write_outputs,
)
from moco_bench.convert.arch import build_resnet
from moco_bench.convert.cli import register
from moco_bench.core.errors import CheckpointError, ResultExistsError

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# Epochs completed: solo-learn and lightly (Lightning, no loop state in these files) store the index of the
# epoch that just finished, so 399 reads 400.
EPOCHS = {"moco": 200, "mocov3": 100, "mmselfsup": 200, "vissl": 200, "solo-learn": 400, "lightly": 101,
          "dino": 100, "torchvision": None, "swav": 100, "barlowtwins": 300, "bolts-moco": 10, "byol-pytorch": None}
# (format, builder keyword arguments): every layout, plus the variants a layout comes in.
LAYOUTS = [pytest.param(name, {}, id=name) for name in BUILDERS] + [
    pytest.param("moco", {"mlp": False}, id="moco-v1-linear-fc"),
    pytest.param("moco", {"ddp": False}, id="moco-without-ddp-prefix"),
    pytest.param("mmselfsup", {"version": "0.x"}, id="mmselfsup-0.x"),
    pytest.param("lightly", {"sequential": False}, id="lightly-named-children"),
    pytest.param("lightly", {"prefix": "model."}, id="lightly-model-prefix"),
    pytest.param("bolts-moco", {"version": "MoCo"}, id="bolts-moco-refactored"),
]


@pytest.fixture(scope="module")
def r18() -> nn.Module:
    torch.manual_seed(18)
    return trained_like(torchvision.models.resnet18(), 18)


@pytest.fixture(scope="module")
def r50() -> nn.Module:
    torch.manual_seed(50)
    return trained_like(torchvision.models.resnet50(), 50)


@pytest.fixture(scope="module")
def r50_checkpoints(r50, tmp_path_factory):
    """ResNet-50 checkpoints (about 200 MB each) built on first use, once per module."""
    root, built = tmp_path_factory.mktemp("r50"), {}

    def get(name: str):
        if name not in built:
            built[name] = BUILDERS[name](r50, root / f"{name}.pth")
        return built[name]

    return get


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="moco-bench")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _assert_same_backbone(converted, model: nn.Module) -> None:
    reference = backbone_state(model)
    assert list(converted.state_dict) == list(reference)
    for key, tensor in reference.items():
        assert converted.state_dict[key].dtype == tensor.dtype, key
        assert torch.equal(converted.state_dict[key], tensor), key


def _assert_same_features(converted, model: nn.Module) -> None:
    original = _copy_without_fc(model)
    rebuilt = converted.build_model().eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (original(x) - rebuilt(x)).abs().max().item()
    assert diff == 0.0


def _copy_without_fc(model: nn.Module) -> nn.Module:
    copy = deepcopy(model)
    copy.fc = nn.Identity()
    return copy.eval()


@pytest.mark.parametrize("name,kwargs", LAYOUTS)
def test_resnet18_layouts_convert_exactly(name, kwargs, r18, tmp_path):
    built = BUILDERS[name](r18, tmp_path / "ckpt.pth", **kwargs)
    converted = load_backbone(built.path)
    assert (converted.format, converted.arch, converted.epoch) == (name, "resnet18", EPOCHS[name])
    _assert_same_backbone(converted, r18)
    _assert_same_features(converted, r18)
    report = converted.report
    assert set(report.dropped) == built.dropped
    assert (report.unexpected, report.missing, report.shape_mismatches) == ([], [], {})
    assert sorted(report.used.values()) == sorted(backbone_state(r18))
    assert report.classifier_missing == ["fc.weight", "fc.bias"]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_resnet50_layouts_convert_exactly(name, r50, r50_checkpoints):
    built = r50_checkpoints(name)
    converted = load_backbone(built.path)
    assert (converted.format, converted.arch) == (name, "resnet50")
    _assert_same_backbone(converted, r50)
    _assert_same_features(converted, r50)
    assert set(converted.report.dropped) == built.dropped


def test_moco_report_names_what_was_dropped_and_why(r18, tmp_path):
    converted = load_backbone(make_moco_checkpoint(r18, tmp_path / "c.pth", mlp=True).path)
    dropped = converted.report.dropped
    n_backbone = len(backbone_state(r18))
    by_reason = {}
    for key, reason in dropped.items():
        by_reason.setdefault(reason, set()).add(key)
    assert by_reason == {
        "momentum (key/teacher) encoder": {f"module.encoder_k.{k}" for k in backbone_state(r18)}
        | {f"module.encoder_k.fc.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")},
        "projection head": {f"module.encoder_q.fc.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")},
        "queue of negative keys": {"module.queue", "module.queue_ptr"},
    }
    assert len(converted.report.used) == n_backbone
    assert converted.report.used["module.encoder_q.layer1.0.bn1.running_var"] == "layer1.0.bn1.running_var"


@pytest.mark.parametrize("arch", ARCHS)
def test_architecture_detected_from_shapes(arch):
    state = build_resnet(arch, device="meta").state_dict()
    assert detect_arch(state, "meta") == arch


def _detectron2_keys_by_hand(depths: tuple[int, ...], convs: int, shortcut_stages: tuple[int, ...]) -> set[str]:
    """MoCo's renaming written out from the ResNet structure (stem, res2..res5, convN.norm, shortcut)."""
    keys = {"stem.conv1.weight", *(f"stem.conv1.norm.{p}" for p in BN)}
    for stage, blocks in zip(range(2, 6), depths):
        for b in range(blocks):
            for c in range(1, convs + 1):
                keys |= {f"res{stage}.{b}.conv{c}.weight", *(f"res{stage}.{b}.conv{c}.norm.{p}" for p in BN)}
        if stage in shortcut_stages:
            keys |= {f"res{stage}.0.shortcut.weight", *(f"res{stage}.0.shortcut.norm.{p}" for p in BN)}
    return keys


@pytest.mark.parametrize("arch,depths,convs,shortcut_stages", [
    ("resnet18", (2, 2, 2, 2), 2, (3, 4, 5)),
    ("resnet50", (3, 4, 6, 3), 3, (2, 3, 4, 5)),
])
def test_detectron2_keys_follow_moco_rules(arch, depths, convs, shortcut_stages, r18, r50, tmp_path):
    model = {"resnet18": r18, "resnet50": r50}[arch]
    converted = load_backbone(make_torchvision_checkpoint(model, tmp_path / "tv.pth").path)
    pkl = write_detectron2(converted, tmp_path / "out.pkl")
    data = read_detectron2_pkl(pkl)
    assert data["matching_heuristics"] is True and data["__author__"]
    assert set(data["model"]) == _detectron2_keys_by_hand(depths, convs, shortcut_stages)
    reference = model.state_dict()
    for tv_key, d2_key in [("bn1.weight", "stem.conv1.norm.weight"), ("conv1.weight", "stem.conv1.weight"),
                           ("layer1.1.bn2.running_mean", "res2.1.conv2.norm.running_mean"),
                           ("layer2.0.downsample.0.weight", "res3.0.shortcut.weight"),
                           ("layer4.0.downsample.1.running_var", "res5.0.shortcut.norm.running_var")]:
        assert isinstance(data["model"][d2_key], np.ndarray)
        assert np.array_equal(data["model"][d2_key], reference[tv_key].numpy()), d2_key
    assert converted.report.detectron2["layer3.0.downsample.1.bias"] == "res4.0.shortcut.norm.bias"


def test_detectron2_checkpointer_loads_every_backbone_weight(r50_checkpoints, tmp_path):
    pytest.importorskip("detectron2", reason="detectron2 is not installed (scripts/install_detectron2.py)")
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    converted = load_backbone(r50_checkpoints("moco").path)
    pkl = write_detectron2(converted, tmp_path / "moco.pkl")
    cfg = get_cfg()  # detectron2's defaults are the R50-C4 Faster R-CNN (Res5ROIHeads)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0  # transfer configs train every BN layer (evaluate/detectron2/Base-RCNN-C4-BN.yaml)
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    model = build_model(cfg)
    assert cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeads"
    DetectionCheckpointer(model).load(str(pkl))
    weights = read_detectron2_pkl(pkl)["model"]
    loaded = set()
    for key, value in model.state_dict().items():
        if key.startswith(("backbone.", "roi_heads.res5.")):
            name = key.split(".", 1)[1]  # backbone.res2.0.conv1.weight -> res2.0.conv1.weight
            assert name in weights, f"{key} has no weights in the .pkl"
            assert np.array_equal(value.numpy(), weights[name]), f"{key} was not loaded"
            loaded.add(name)
    assert loaded == set(weights)  # every converted tensor found its place


def test_cli_writes_outputs_and_report(r18, tmp_path, capsys):
    built = make_moco_checkpoint(r18, tmp_path / "checkpoint_0200.pth.tar", arch="resnet18")
    out = tmp_path / "out"
    assert _cli(["convert", str(built.path), "--to", "both", "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["backbone.pkl", "backbone.pth", "convert_report.json"]
    stdout = capsys.readouterr().out
    assert "format moco" in stdout and "arch resnet18" in stdout and "epochs completed 200" in stdout
    assert "weights: the model copy encoder_q.* (default: moco's main_lincls.py loads module.encoder_q)" in stdout
    assert "other copy: momentum encoder_k.*" in stdout and "differs from the chosen copy" in stdout

    fresh = torchvision.models.resnet18()
    result = fresh.load_state_dict(torch.load(out / "backbone.pth", weights_only=True), strict=False)
    assert (sorted(result.missing_keys), result.unexpected_keys) == (["fc.bias", "fc.weight"], [])
    report = json.loads((out / "convert_report.json").read_text())
    assert set(report["dropped"]) == built.dropped
    assert report["format"] == "moco" and report["arch"] == "resnet18" and report["epoch"] == 200
    assert len(report["detectron2"]) == len(report["used"]) == len(backbone_state(r18))
    assert report["outputs"]["detectron2"] == str(out / "backbone.pkl")

    with pytest.raises(ResultExistsError):
        _cli(["convert", str(built.path), "--to", "torchvision", "-o", str(out)])
    assert _cli(["convert", str(built.path), "--to", "torchvision", "-o", str(out), "--force"]) == 0


def test_record_and_forced_format(r18, tmp_path):
    path = tmp_path / "bare.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in backbone_state(r18).items()}}, path)
    detected = load_backbone(path)
    forced = load_backbone(path, fmt="solo-learn")
    assert (detected.format, forced.format) == ("mmselfsup", "solo-learn")
    assert detected.record() == {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                 "format": "mmselfsup", "arch": "resnet18", "epochs": None, "weights": "backbone",
                                 "recipe": {"method": None, "epochs": None, "arch": "R18", "pretrain_data": None,
                                            "source": "unknown", "deviations": {}}}
    vissl = BUILDERS["vissl"](r18, tmp_path / "vissl.torch").path
    with pytest.raises(CheckpointError, match="not in the moco layout .* top-level keys: phase_idx"):
        load_backbone(vissl, fmt="moco")
    with pytest.raises(CheckpointError, match=r"no backbone tensors under 'encoder_q', 'encoder_k' .* backbone.conv1 "):
        load_backbone(path, fmt="moco")


def test_random_baseline_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    a = load_backbone("random:resnet18@3")
    assert torch.equal(torch.rand(3), expected_next)
    b, c = load_backbone("random:resnet18@3"), load_backbone("random:resnet18")
    torch.manual_seed(3)
    reference = torchvision.models.resnet18()
    _assert_same_backbone(a, reference)
    assert torch.equal(a.state_dict["conv1.weight"], b.state_dict["conv1.weight"])
    assert not torch.equal(a.state_dict["conv1.weight"], c.state_dict["conv1.weight"])
    assert a.record() == {"path": "random:resnet18@3", "sha256": b.sha256, "format": "random", "arch": "resnet18",
                          "epochs": 0, "weights": "",
                          "recipe": {"method": "random", "epochs": 0, "arch": "R18", "pretrain_data": "-",
                                     "source": "random initialization", "deviations": {}}}
    assert len(a.sha256) == 64 and a.sha256 != c.sha256
    assert c.path == "random:resnet18@0"
    assert isinstance(a.build_model().fc, nn.Identity)


def test_missing_and_unexpected_keys_need_allow_missing(r18, tmp_path):
    state = dict(r18.state_dict())
    del state["layer3.0.bn2.running_var"], state["bn1.weight"]
    state["temperature"] = torch.tensor(0.2)
    path = tmp_path / "holes.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="2 backbone keys missing.*--allow-missing"):
        load_backbone(path)
    converted = load_backbone(path, allow_missing=True)
    assert sorted(converted.report.missing) == ["bn1.weight", "layer3.0.bn2.running_var"]
    assert converted.report.unexpected == ["temperature"]
    model = converted.build_model()
    assert torch.equal(model.layer4[1].conv2.weight, r18.layer4[1].conv2.weight)


def test_shape_mismatch_is_an_error_even_with_allow_missing(tmp_path):
    cifar = torchvision.models.resnet18()
    cifar.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)  # solo-learn's CIFAR stem
    path = make_solo_learn_checkpoint(cifar, tmp_path / "cifar.ckpt").path
    for allow in (False, True):
        with pytest.raises(CheckpointError, match=r"shape mismatch conv1.weight: checkpoint \[64, 3, 3, 3\]"):
            load_backbone(path, allow_missing=allow)


def _convert_fails(path: Path, out: Path, match: str) -> str:
    with pytest.raises(CheckpointError, match=match) as info:
        _cli(["convert", str(path), "-o", str(out)])
    assert not out.exists() or not any(out.iterdir()), "a failed conversion left files behind"
    return str(info.value)


def test_bad_inputs_give_clear_errors_and_no_output(r18, tmp_path):
    out = tmp_path / "out"
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    _convert_fails(text, out, "notes.txt: not a PyTorch checkpoint")

    good = make_torchvision_checkpoint(r18, tmp_path / "good.pth").path
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _convert_fails(truncated, out, "truncated.pth: cannot read the checkpoint")

    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_only)
    _convert_fails(tensor_only, out, "expected a dict of weights, got Tensor")
    _convert_fails(tmp_path / "absent.pth", out, "no such checkpoint file")

    unknown = tmp_path / "unknown.pth"
    torch.save({"epoch": 3, "weights": {f"encoder.{k}": v for k, v in backbone_state(r18).items()}}, unknown)
    message = _convert_fails(unknown, out, "unknown checkpoint layout")
    assert "top-level keys: epoch, weights" in message and "weights.encoder" in message

    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2,
                                               hidden_dim=16, mlp_dim=32).state_dict()
    non_resnet = tmp_path / "mocov3_vit.pth"
    torch.save({"epoch": 300, "arch": "vit_small", "state_dict": {
        **{f"module.base_encoder.{k}": v for k, v in vit.items()},
        **{f"module.momentum_encoder.{k}": v for k, v in vit.items()}}}, non_resnet)
    message = _convert_fails(non_resnet, out, "mocov3_vit.pth: not a ResNet: ")
    assert "class_token" in message and "conv_proj" in message
    assert len(message) - len(str(non_resnet)) < 300 and "--format" not in message  # short, not a key dump


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_detectron2_pickles_read_back_at_any_protocol(protocol, tmp_path):
    data = {"model": {"stem.conv1.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
                      "stem.conv1.norm.num_batches_tracked": np.array(7)},
            "__author__": "MOCO", "matching_heuristics": True}
    path = tmp_path / "w.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    back = read_detectron2_pkl(path)
    assert back.keys() == data.keys() and back["matching_heuristics"] is True
    for key, value in data["model"].items():
        assert np.array_equal(back["model"][key], value) and back["model"][key].dtype == value.dtype


def test_write_outputs_torchvision_only(r18, tmp_path):
    converted = load_backbone(make_torchvision_checkpoint(r18, tmp_path / "tv.pth").path)
    paths = write_outputs(converted, tmp_path / "out", to="torchvision")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["backbone.pth", "convert_report.json"]
    assert set(paths) == {"torchvision", "report"}


def test_metadata_beside_the_weights_loads(r18, tmp_path):
    """torchvision's reference scripts: {model, optimizer, epoch, args (argparse), ...}, numpy in meters."""
    path = tmp_path / "model_89.pth"
    torch.save({"model": r18.state_dict(), "optimizer": {"state": {}, "param_groups": []}, "epoch": 89,
                "args": argparse.Namespace(arch="resnet18", lr=0.1), "best_acc1": np.float64(71.2),
                "confusion": np.eye(3, dtype=np.int64)}, path)
    converted = load_backbone(path)
    assert (converted.format, converted.report.location, converted.epoch) == ("torchvision-reference", "model", 90)
    assert "index of the last finished epoch" in converted.report.epoch_note
    _assert_same_backbone(converted, r18)


def test_detectron2_pickle_written_under_numpy1_reads_back(tmp_path):
    """Pickles from numpy 1 name numpy.core.multiarray, which numpy 2 calls numpy._core.multiarray."""
    data = pickle.dumps({"model": {"stem.conv1.weight": np.ones((2, 2), np.float32)}, "__author__": "MOCO",
                         "matching_heuristics": True}, protocol=2)
    assert b"numpy._core.multiarray" in data
    path = tmp_path / "numpy1.pkl"
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert np.array_equal(read_detectron2_pkl(path)["model"]["stem.conv1.weight"], np.ones((2, 2)))
