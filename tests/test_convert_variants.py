"""Networks that are not torchvision ResNets are refused by what they are, whatever the flags (issue 32);
weights saved channels_last or otherwise strided convert bit for bit through every reader; SwAV's padded stem
is torchvision's."""

from __future__ import annotations

import argparse
import copy
import pathlib
import pickle

import pytest
import torch
import torchvision
from checkpoint_builders import backbone_state, make_barlowtwins_checkpoint, make_swav_checkpoint, trained_like
from torch import nn

from moco_bench.convert import load_backbone
from moco_bench.core.errors import CheckpointError

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _timm():
    return pytest.importorskip("timm", reason="timm is not installed (it is in moco-bench's test extra)")


@pytest.mark.parametrize("name,what", [
    ("resnet50_gn", r"its 53 norm layers keep no running statistics \(bn1 has only bias, weight\): GroupNorm"),
    ("resnet18d", r"a deep stem \(conv1.0, conv1.1, conv1.3, conv1.4, conv1.6: stacked 3x3 convolutions"),
    ("seresnet18", r"its blocks hold modules torchvision's have not \(layer1.0.se, layer1.1.se, layer2.0.se ...: "
                   r"squeeze-and-excitation"),
])
def test_other_resnets_are_refused_whatever_the_flags(name, what, tmp_path):
    """Issue 32: timm's resnet50_gn converted with --allow-missing gave features 3.2 away, with rc 0."""
    model = _timm().create_model(name, pretrained=False)
    path = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), path)
    for kwargs in ({}, {"allow_missing": True}, {"allow_missing": True, "fmt": "torchvision"}):
        with pytest.raises(CheckpointError, match=f"{name}.pth: not a torchvision ResNet: {what}.*refused whatever "
                                                  f"the flags"):
            load_backbone(path, **kwargs)


def test_a_resnet_whose_difference_no_tensor_shows_is_refused_by_its_name(tmp_path):
    """timm's resnetblur18 has resnet18's keys and shapes and blurs before every stride: its CheckpointSaver
    file names it in args.model, its Hub save in config.json."""
    timm = _timm()
    from timm.models import _hub
    from timm.utils import CheckpointSaver

    model = timm.create_model("resnetblur18", pretrained=False)
    assert model.state_dict().keys() == timm.create_model("resnet18", pretrained=False).state_dict().keys()
    saver = CheckpointSaver(model, torch.optim.SGD(model.parameters(), lr=0.1), checkpoint_dir=str(tmp_path),
                            recovery_dir=str(tmp_path), args=argparse.Namespace(model="resnetblur18"))
    saver.save_checkpoint(0, metric=0.0)
    _hub.save_for_hf(model, str(tmp_path / "hub"), safe_serialization=True)
    for path, where in ((tmp_path / "last.pth.tar", "args.model 'resnetblur18'"),
                        (tmp_path / "hub" / "model.safetensors", "config.json's architecture 'resnetblur18'")):
        with pytest.raises(CheckpointError, match=f"names its network \\({where}\\), which is not one of the "
                                                  f"torchvision ResNets"):
            load_backbone(path, allow_missing=True)


@pytest.fixture(scope="module")
def r18() -> nn.Module:
    torch.manual_seed(9)
    return trained_like(torchvision.models.resnet18(), 9)


def _strided_files(state: dict, root: pathlib.Path) -> dict[str, pathlib.Path]:
    """``state`` through every reader: torch's zip and legacy files, both read inertly too (a pathlib.Path
    beside the weights makes torch.load refuse them), and plain pickles of tensors and of numpy arrays."""
    files = {"zip": ({"state_dict": state}, {}), "legacy": ({"state_dict": state},
                                                            {"_use_new_zipfile_serialization": False}),
             "inert-zip": ({"state_dict": state, "dir": pathlib.Path("/")}, {}),
             "inert-legacy": ({"state_dict": state, "dir": pathlib.Path("/")},
                              {"_use_new_zipfile_serialization": False})}
    out = {}
    for name, (obj, kwargs) in files.items():
        out[name] = root / f"{name}.pth"
        torch.save(obj, out[name], **kwargs)
    for protocol in (2, 4, 5):
        out[f"pickle-{protocol}"] = root / f"tensors{protocol}.pkl"
        out[f"pickle-{protocol}"].write_bytes(pickle.dumps(state, protocol=protocol))
        out[f"numpy-{protocol}"] = root / f"arrays{protocol}.pkl"
        out[f"numpy-{protocol}"].write_bytes(pickle.dumps({k: v.numpy() for k, v in state.items()}, protocol))
    return out


@pytest.mark.parametrize("layout", ["channels_last", "transposed"])
def test_strided_weights_convert_exactly_through_every_reader(layout, r18, tmp_path):
    """channels_last (and any other strides) survive every reader. numpy 2.3+ pickles such an array at protocol
    5 as _frombuffer(..., 'K', axis_order), which the inert unpickler kept as a placeholder: the weights were
    refused as 'not a ResNet'."""
    if layout == "channels_last":
        state = copy.deepcopy(r18).to(memory_format=torch.channels_last).state_dict()
    else:
        state = {k: v.transpose(-1, -2).contiguous().transpose(-1, -2) if v.dim() == 4 else v
                 for k, v in r18.state_dict().items()}
    assert not state["layer1.0.conv1.weight"].is_contiguous()
    reference = copy.deepcopy(r18)
    reference.fc = nn.Identity()
    for name, path in _strided_files(state, tmp_path).items():
        converted = load_backbone(path)
        for key, tensor in backbone_state(r18).items():
            assert torch.equal(converted.state_dict[key], tensor), (name, key)
        with torch.no_grad():
            assert (converted.build_model().eval()(X) - reference.eval()(X)).abs().max().item() == 0, name


class _SwAVStem(nn.Module):
    """facebookresearch/swav src/resnet50.py's forward_backbone: ConstantPad2d(1, 0) before a conv1 of
    padding 2, then torchvision's layers."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.padding = nn.ConstantPad2d(1, 0.0)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=2, bias=False)
        self.conv1.weight = model.conv1.weight

    def forward(self, x):
        m = self.model
        x = m.maxpool(m.relu(m.bn1(self.conv1(self.padding(x)))))
        return m.avgpool(m.layer4(m.layer3(m.layer2(m.layer1(x))))).flatten(1)


def test_swav_checkpoint_features_equal_swavs_own_network(r18, tmp_path):
    converted = load_backbone(make_swav_checkpoint(r18, tmp_path / "checkpoint.pth.tar").path)
    assert (converted.format, converted.epoch) == ("swav", 100)
    with torch.no_grad():
        assert (converted.build_model().eval()(X) - _SwAVStem(r18).eval()(X)).abs().max().item() == 0


def test_barlowtwins_checkpoint_keeps_its_optimizer_functions_as_placeholders(r18, tmp_path):
    """main.py's LARS param groups hold exclude_bias_and_norm, a function torch.load refuses: read inertly."""
    converted = load_backbone(make_barlowtwins_checkpoint(r18, tmp_path / "checkpoint.pth").path)
    assert converted.report.placeholders == ["checkpoint_builders.exclude_bias_and_norm"]
    assert (converted.format, converted.report.location) == ("barlowtwins", "model")
