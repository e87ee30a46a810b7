"""Checkpoints as torch and Hugging Face write them in 2026 convert exactly (issue 32): transformers'
ResNetModel and ResNetForImageClassification (save_pretrained), torch.compile'd modules (``_orig_mod.``
anywhere in the key chain), half-precision and float64 state dicts, FSDP2 full state dicts, and the
distributed checkpoint formats refused with how to gather them. Tensors are compared bit for bit, and the
converted torchvision ResNet's features with the source network's (max abs diff 0)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torchvision
from checkpoint_builders import backbone_state, trained_like
from torch import nn

from moco_bench.convert import load_backbone, write_outputs
from moco_bench.core.errors import CheckpointError
from moco_bench.models.moco import MoCo

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
TESTS = Path(__file__).resolve().parent


def _trunk(model: nn.Module) -> nn.Module:
    """A torchvision ResNet up to layer4 (no pooling)."""
    return nn.Sequential(*list(model.children())[:-2]).eval()


def _assert_same(converted, reference: dict[str, torch.Tensor], source: nn.Module) -> None:
    """Tensors in torchvision's names and order, bit for bit, and layer4 features equal to ``source``'s."""
    assert list(converted.state_dict) == list(reference)
    for key, tensor in reference.items():
        assert converted.state_dict[key].dtype == tensor.dtype and torch.equal(converted.state_dict[key], tensor), key
    with torch.no_grad():
        assert (_trunk(converted.build_model())(X) - source(X)).abs().max().item() == 0


@pytest.fixture(scope="module")
def r18() -> nn.Module:
    torch.manual_seed(5)
    return trained_like(torchvision.models.resnet18(), 5)


# --- Hugging Face transformers -----------------------------------------------------------------------------

HF_CONFIGS = {  # transformers' ResNetConfig for torchvision's resnet18 and resnet50
    "resnet18": {"layer_type": "basic", "depths": [2, 2, 2, 2], "hidden_sizes": [64, 128, 256, 512]},
    "resnet50": {"layer_type": "bottleneck", "depths": [3, 4, 6, 3], "hidden_sizes": [256, 512, 1024, 2048]},
}


def _hf_pairs(model):
    """(torchvision module prefix, transformers module), from modeling_resnet.py's module structure (written
    out here, independently of moco_bench.convert.hf_names)."""
    stem = model.embedder.embedder
    yield "conv1", stem.convolution
    yield "bn1", stem.normalization
    for s, stage in enumerate(model.encoder.stages):
        for b, block in enumerate(stage.layers):
            for k, layer in enumerate(block.layer):
                yield f"layer{s + 1}.{b}.conv{k + 1}", layer.convolution
                yield f"layer{s + 1}.{b}.bn{k + 1}", layer.normalization
            if not isinstance(block.shortcut, nn.Identity):
                yield f"layer{s + 1}.{b}.downsample.0", block.shortcut.convolution
                yield f"layer{s + 1}.{b}.downsample.1", block.shortcut.normalization


@pytest.mark.parametrize("arch,head", [("resnet18", False), ("resnet50", True)],
                         ids=["ResNetModel-resnet18", "ResNetForImageClassification-resnet50"])
def test_transformers_save_pretrained(arch, head, tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (in the test extra)")
    config = transformers.ResNetConfig(embedding_size=64, num_labels=10, **HF_CONFIGS[arch])
    torch.manual_seed(0)
    cls = transformers.ResNetForImageClassification if head else transformers.ResNetModel
    model = trained_like(cls(config))
    model.save_pretrained(tmp_path)  # model.safetensors and config.json
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # what transformers 4 wrote beside them
    body = model.resnet if head else model
    reference = {f"{prefix}.{k}": v for prefix, module in _hf_pairs(body) for k, v in module.state_dict().items()}
    expected = {k: reference[k] for k in backbone_state(getattr(torchvision.models, arch)())}

    class Trunk(nn.Module):
        def forward(self, x):
            return body(pixel_values=x).last_hidden_state

    for name in ("model.safetensors", "pytorch_model.bin"):
        converted = load_backbone(tmp_path / name)
        assert (converted.format, converted.arch) == ("hf-resnet", arch)
        assert "config.json: a torchvision-style ResNet" in converted.report.arch_note
        assert converted.report.dropped == ({"classifier.1.weight": "classifier", "classifier.1.bias": "classifier"}
                                            if head else {})
        _assert_same(converted, expected, Trunk().eval())


def test_transformers_resnets_that_stride_elsewhere_are_refused(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (in the test extra)")
    config = transformers.ResNetConfig(embedding_size=64, downsample_in_bottleneck=True, **HF_CONFIGS["resnet50"])
    transformers.ResNetModel(config).save_pretrained(tmp_path)
    for allow in (False, True):
        with pytest.raises(CheckpointError, match="config.json says downsample_in_bottleneck=True: a transformers "
                                                  "ResNet that strides .* where torchvision's does not"):
            load_backbone(tmp_path / "model.safetensors", allow_missing=allow)
    config_file = tmp_path / "config.json"
    config_file.unlink()
    assert "no config.json beside the file: transformers' defaults assumed" in \
        load_backbone(tmp_path / "model.safetensors").report.arch_note


# --- torch.compile -----------------------------------------------------------------------------------------

def _compiled_files(model: nn.Module, root: Path) -> dict[str, Path]:
    """State dicts of compiled modules (OptimizedModule keeps the module as _orig_mod; nothing is compiled
    until the first forward), alone, under DataParallel's module. either way round,, and under 'model'."""
    files = {"compiled": torch.compile(model).state_dict(),
             "module._orig_mod": nn.DataParallel(torch.compile(model)).state_dict(),
             "_orig_mod.module": torch.compile(nn.DataParallel(model)).state_dict()}
    out = {}
    for name, state in files.items():
        out[name] = root / f"{name}.pth"
        torch.save(state, out[name])
    out["under model"] = root / "model.pth"
    torch.save({"model": files["compiled"], "epoch": 4}, out["under model"])
    return out


def test_compiled_state_dicts_convert(r18, tmp_path):
    for name, path in _compiled_files(r18, tmp_path).items():
        converted = load_backbone(path)
        assert converted.format == "torchvision", name
        assert all("_orig_mod." in key for key in converted.report.used), name
        _assert_same(converted, backbone_state(r18), _trunk(r18))


def test_a_compiled_encoder_inside_a_moco_model_converts(r18, tmp_path):
    """moco-bench's own MoCo with its query encoder compiled, saved as main_moco.py does (module. prefix)."""
    moco = MoCo("resnet18", dim=16, K=32, mlp=True)
    moco.encoder_q.load_state_dict({**moco.encoder_q.state_dict(), **backbone_state(r18)})
    moco.encoder_q = torch.compile(moco.encoder_q)
    for root in (moco, torch.compile(moco)):
        path = tmp_path / "moco.pth.tar"
        torch.save({"epoch": 2, "arch": "resnet18",
                    "state_dict": {f"module.{k}": v for k, v in root.state_dict().items()}}, path)
        converted = load_backbone(path)
        assert (converted.format, converted.epoch) == ("moco", 2)
        assert any(k.startswith(("module.encoder_q._orig_mod.", "module._orig_mod.encoder_q._orig_mod."))
                   for k in converted.report.used)
        _assert_same(converted, backbone_state(r18), _trunk(r18))


# --- dtypes --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_any_float_dtype_converts_to_float32_saying_what_the_file_held(dtype, r18, tmp_path):
    """Issue 32: a bf16 state dict crashed the detectron2 writer (TypeError: unsupported ScalarType BFloat16)."""
    source = copy.deepcopy(r18).to(dtype)
    path = tmp_path / "half.pth"
    torch.save(source.state_dict(), path)
    converted = load_backbone(path)
    as_float32 = {k: v.float() if v.is_floating_point() else v for k, v in backbone_state(source).items()}
    _assert_same(converted, as_float32, _trunk(copy.deepcopy(source).float()))
    name = str(dtype).removeprefix("torch.")
    assert converted.report.source_dtypes == {name: sum(v.is_floating_point() for v in as_float32.values())}
    assert f"stored as {converted.report.source_dtypes[name]} {name}; converted to float32" in \
        converted.report.summary()
    paths = write_outputs(converted, tmp_path / "out")
    assert load_backbone(paths["detectron2"]).state_dict["conv1.weight"].dtype == torch.float32


# --- FSDP2 and distributed checkpoints --------------------------------------------------------------------

FSDP2_RUN = textwrap.dedent("""
    import sys, torch, torchvision, torch.distributed as dist
    sys.path.insert(0, {tests!r})
    from checkpoint_builders import trained_like
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import fully_shard
    dist.init_process_group("gloo", init_method="file://{root}/pg", rank=0, world_size=1)
    torch.manual_seed(0)
    model = trained_like(torchvision.models.resnet18())
    torch.save(model.state_dict(), "{root}/reference.pth")
    fully_shard(model)
    torch.save(model.state_dict(), "{root}/sharded.pth")  # DTensors: what issue 32 found refused with a traceback
    # the recipe the refusal gives
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    torch.save(sd, "{root}/full.pth")
    dist.destroy_process_group()
""")


def test_fsdp2_sharded_save_is_refused_saying_how_to_gather_and_the_gathered_one_converts(tmp_path):
    script = FSDP2_RUN.format(tests=str(TESTS), root=tmp_path)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300, capture_output=True)
    with pytest.raises(CheckpointError, match=r"sharded.pth: a sharded state dict \(torch.distributed.tensor.DTensor"
                                              r".*get_model_state_dict\(model, options=StateDictOptions\("
                                              r"full_state_dict=True, cpu_offload=True\)\)"):
        load_backbone(tmp_path / "sharded.pth")
    reference = torchvision.models.resnet18()
    reference.load_state_dict(torch.load(tmp_path / "reference.pth", weights_only=True))
    _assert_same(load_backbone(tmp_path / "full.pth"), backbone_state(reference), _trunk(reference))


def test_a_distributed_checkpoint_folder_is_refused_saying_how_to_make_one_file(r18, tmp_path):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    folder = tmp_path / "step_100"
    dcp.save({"model": r18.state_dict()}, checkpoint_id=folder)
    with pytest.raises(CheckpointError, match="step_100: a torch.distributed.checkpoint folder .*dcp_to_torch_save"):
        load_backbone(folder)
    dcp_to_torch_save(folder, tmp_path / "full.pth")
    _assert_same(load_backbone(tmp_path / "full.pth"), backbone_state(r18), _trunk(r18))


def test_hub_config_that_is_not_json_is_named(r18, tmp_path):
    torch.save(r18.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: the config.json beside pytorch_model.bin is not"):
        load_backbone(tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 1000}))
    assert "config.json's architecture 'resnet18', a torchvision ResNet" in \
        load_backbone(tmp_path / "pytorch_model.bin").report.arch_note
