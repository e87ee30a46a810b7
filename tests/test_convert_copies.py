"""Files with several copies of the network (momentum/EMA encoders, DINO teacher and student), ambiguous files,
and the suite's own detectron2 .pkl read back: which copy is converted, and what the report says."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import torchvision
from checkpoint_builders import BUILDERS, backbone_state, trained_like
from torch import nn
from torch.optim.swa_utils import AveragedModel

from moco_bench.convert import load_backbone, write_outputs
from moco_bench.convert.cli import register
from moco_bench.core.errors import CheckpointError


@pytest.fixture(scope="module")
def r18() -> nn.Module:
    torch.manual_seed(3)
    return trained_like(torchvision.models.resnet18(), 3)


def _momentum(model: nn.Module) -> dict[str, torch.Tensor]:
    """What the builders store as the momentum/student copy: every float tensor plus one."""
    return {k: v + 1 if v.is_floating_point() else v for k, v in backbone_state(model).items()}


def _assert_equal(converted, expected: dict[str, torch.Tensor]) -> None:
    assert list(converted.state_dict) == list(expected)
    for key, tensor in expected.items():
        assert converted.state_dict[key].dtype == tensor.dtype and torch.equal(converted.state_dict[key], tensor), key


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="moco-bench")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


# (builder, keyword arguments, the role --weights asks for, the key prefix of that copy in the file)
SECOND_COPIES = [
    ("moco", {}, "momentum", "encoder_k"),
    ("mocov3", {}, "momentum", "momentum_encoder"),
    ("mmselfsup", {}, "momentum", "encoder_k.module.0"),
    ("mmselfsup", {"version": "0.x"}, "momentum", "encoder_k.0"),  # also holds encoder_q.0, equal to backbone
    ("vissl", {}, "momentum", "loss.moco_encoder.trunk._feature_blocks"),
    ("solo-learn", {}, "momentum", "momentum_backbone"),
    ("lightly", {}, "momentum", "backbone_momentum"),
    ("dino", {}, "student", "student.backbone"),
    ("bolts-moco", {}, "momentum", "encoder_k"),
    ("byol-pytorch", {}, "momentum", "target_encoder.net"),
]


@pytest.mark.parametrize("name,kwargs,role,prefix", SECOND_COPIES,
                         ids=[f"{n}-{r}{'-0.x' if k else ''}" for n, k, r, _ in SECOND_COPIES])
def test_weights_picks_the_other_copy_by_role_or_prefix(name, kwargs, role, prefix, r18, tmp_path):
    path = BUILDERS[name](r18, tmp_path / "ckpt.pth", **kwargs).path
    default = load_backbone(path)
    _assert_equal(default, backbone_state(r18))
    assert default.report.weights["chosen_by"].startswith("default: ")
    others = [c for c in default.report.copies if not c["chosen"] and not c["same_as_chosen"]]
    assert [(c["role"], c["prefix"]) for c in others] == [(role, prefix)]
    if kwargs.get("version") == "0.x":  # the query encoder stored twice is listed as identical
        assert [(c["prefix"], c["same_as_chosen"]) for c in default.report.copies if c["role"] == "model"] == [
            ("backbone", True), ("encoder_q.0", True)]

    for weights in (role, prefix):
        other = load_backbone(path, weights=weights)
        _assert_equal(other, _momentum(r18))
        assert other.sha256 != default.sha256 and other.record()["weights"] == prefix  # caches tell them apart
        assert other.report.weights == {"prefix": prefix, "role": role, "chosen_by": f"--weights {weights}"}
        assert all(not key.startswith(prefix) for key in other.report.dropped if "fc" not in key)


def test_a_role_the_file_lacks_is_an_error_listing_its_copies(r18, tmp_path):
    path = BUILDERS["moco"](r18, tmp_path / "moco.pth").path
    with pytest.raises(CheckpointError, match=r"no copy of the network matching --weights ema; it holds: model "
                                              r"\(encoder_q\.\*\), momentum \(encoder_k\.\*\)"):
        load_backbone(path, weights="ema")
    with pytest.raises(CheckpointError, match="random baseline has one copy"):
        load_backbone("random:resnet18", weights="ema")


def test_two_differing_copies_of_the_same_role_are_refused_unless_one_is_chosen(r18, tmp_path, capsys):
    """Issue 18 item 6: module.encoder_q.* beside backbone.*, with different tensors."""
    path = tmp_path / "both.pth"
    state = {**{f"module.encoder_q.{k}": v for k, v in _momentum(r18).items()},
             **{f"backbone.{k}": v for k, v in backbone_state(r18).items()}}
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"backbone\.\* and encoder_q\.\* both hold model weights and differ "
                                              r"\(100 of 120 tensors differ, e\.g\. conv1\.weight\).*--weights "
                                              r"backbone or --weights encoder_q"):
        load_backbone(path)
    with pytest.raises(CheckpointError, match="ambiguous"):
        load_backbone(path, weights="model")
    _assert_equal(load_backbone(path, weights="backbone"), backbone_state(r18))
    _assert_equal(load_backbone(path, weights="encoder_q"), _momentum(r18))
    assert _cli(["convert", str(path), "-o", str(tmp_path / "out"), "--weights", "encoder_q"]) == 0
    assert "weights: the model copy encoder_q.* (--weights encoder_q)" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "convert_report.json").read_text())["weights"]["prefix"] == "encoder_q"

    same = tmp_path / "same.pth"
    torch.save({"state_dict": {**{f"module.encoder_q.{k}": v for k, v in backbone_state(r18).items()},
                               **{f"backbone.{k}": v for k, v in backbone_state(r18).items()}}}, same)
    converted = load_backbone(same)
    _assert_equal(converted, backbone_state(r18))
    assert [(c["prefix"], c["chosen"], c["same_as_chosen"]) for c in converted.report.copies] == [
        ("backbone", True, True), ("encoder_q", False, True)]
    assert "other copy: model encoder_q.* (query encoder, 120 tensors, identical to the chosen copy" in \
        converted.report.summary()


def test_torchvision_reference_checkpoint_with_model_ema(r18, tmp_path):
    """references/classification/train.py: model, model_ema (an AveragedModel), epoch index, args."""
    model = torchvision.models.resnet18()
    model.load_state_dict(r18.state_dict())
    ema = AveragedModel(model)
    with torch.no_grad():
        model.conv1.weight.add_(1.0)  # the model moves on; the average keeps the old weights
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "model_ema": ema.state_dict(), "optimizer": {}, "lr_scheduler": {},
                "epoch": 0, "args": argparse.Namespace(model="resnet18", model_ema=True)}, path)
    converted = load_backbone(path)
    assert (converted.format, converted.epoch) == ("torchvision-reference", 1)
    _assert_equal(converted, backbone_state(model))
    averaged = load_backbone(path, weights="ema")
    _assert_equal(averaged, backbone_state(r18))
    assert averaged.report.dropped["model_ema.n_averaged"] == "EMA step counter"


def test_the_suites_own_detectron2_pkl_converts_back(r18, tmp_path, capsys):
    """convert writes backbone.pkl; convert and eval read it back (detectron2 keys -> torchvision keys)."""
    source = BUILDERS["moco"](r18, tmp_path / "checkpoint_0200.pth.tar").path
    write_outputs(load_backbone(source), tmp_path / "first")
    pkl = tmp_path / "first" / "backbone.pkl"
    back = load_backbone(pkl)
    assert (back.format, back.arch, back.report.location) == ("detectron2", "resnet18", "model")
    assert back.report.reader == "inert unpickler (a plain pickle)" and back.report.placeholders == []
    _assert_equal(back, backbone_state(r18))
    assert back.report.used["res5.1.conv2.norm.running_var"] == "layer4.1.bn2.running_var"
    assert back.report.used["stem.conv1.norm.weight"] == "bn1.weight"
    assert _cli(["convert", str(pkl), "--to", "torchvision", "-o", str(tmp_path / "second")]) == 0
    assert "format detectron2" in capsys.readouterr().out
    again = torch.load(tmp_path / "second" / "backbone.pth", weights_only=True)
    assert all(torch.equal(again[k], v) for k, v in backbone_state(r18).items())


def test_pre_1_6_torch_files_convert(r18, tmp_path):
    """MoCo's released checkpoints predate torch's zip format: the legacy stream reads the same."""
    zipped = BUILDERS["moco"](r18, tmp_path / "zip.pth.tar").path
    legacy = tmp_path / "legacy.pth.tar"
    torch.save(torch.load(zipped, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    assert legacy.read_bytes()[:2] != b"PK"
    converted = load_backbone(legacy)
    assert (converted.format, converted.epoch) == ("moco", 200)
    assert converted.report.reader == "torch.load(weights_only=True)"
    _assert_equal(converted, backbone_state(r18))
