"""Checkpoints written by the training libraries' own saving code (mmengine's Runner, PyTorch Lightning with
lightly's modules, timm's CheckpointSaver and Hugging Face export, safetensors) convert exactly: the tensors
and the features of the converted torchvision ResNet equal the source network's, for every copy the file
holds. A library that is not installed skips its test, saying which (they are in the ``test`` extra)."""

from __future__ import annotations

import argparse
import copy
import pathlib
import pickle

import pytest
import torch
import torchvision
from checkpoint_builders import trained_like
from torch import nn

from moco_bench.convert import load_backbone
from moco_bench.core.errors import CheckpointError

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
TV_KEYS = [k for k in torchvision.models.resnet18().state_dict() if not k.startswith("fc.")]


def _need(module: str):
    return pytest.importorskip(module, reason=f"{module} is not installed (it is in moco-bench's test extra)")


def _images(n: int = 8) -> torch.utils.data.TensorDataset:
    return torch.utils.data.TensorDataset(torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1)))


def _assert_converts(converted, state: dict[str, torch.Tensor], trunk: nn.Module, pooled: bool = False) -> None:
    """Tensors equal (torchvision keys, in the source's order), and the features of the rebuilt torchvision
    ResNet equal ``trunk``'s: layer4's output, or the pooled features when ``pooled``."""
    assert list(converted.state_dict) == TV_KEYS
    assert list(state.values()) and len(state) == len(TV_KEYS)
    for (key, tensor), tv_key in zip(state.items(), TV_KEYS):
        assert converted.state_dict[tv_key].dtype == tensor.dtype, key
        assert torch.equal(converted.state_dict[tv_key], tensor), key
    rebuilt = converted.build_model().eval()
    if not pooled:
        rebuilt = nn.Sequential(*list(rebuilt.children())[:-2])  # stop at layer4
    with torch.no_grad():
        assert torch.equal(rebuilt(X), trunk.eval()(X).flatten(1) if pooled else trunk.eval()(X))


def test_mmengine_runner_checkpoint(tmp_path):
    """mmengine's Runner (mmselfsup 1.x / mmpretrain training output): epoch_N.pth with a message hub of
    HistoryBuffers (numpy arrays, builtins.getattr), a momentum encoder kept by mmengine's EMA."""
    _need("mmengine")
    pytest.importorskip("cv2", reason="mmengine's Runner imports cv2 (opencv-python-headless is in the test extra)")
    from mmengine.model import BaseModel, ExponentialMovingAverage
    from mmengine.runner import Runner

    class MoCoLike(BaseModel):  # mmpretrain's MoCoV2: backbone, neck, momentum_encoder = EMA(backbone + neck)
        def __init__(self):
            super().__init__()
            self.backbone = torchvision.models.resnet18()
            self.backbone.fc = nn.Identity()
            self.neck = nn.Linear(512, 16)
            self.momentum_encoder = ExponentialMovingAverage(nn.Sequential(self.backbone, self.neck), momentum=0.5)

        def forward(self, inputs, data_samples=None, mode="loss"):
            self.momentum_encoder.update_parameters(nn.Sequential(self.backbone, self.neck))
            return {"loss": self.neck(self.backbone(inputs)).pow(2).mean()}

    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(_images(), batch_size=4,
                                         collate_fn=lambda b: {"inputs": torch.stack([x for (x,) in b])})
    runner = Runner(model=MoCoLike(), work_dir=str(tmp_path / "work"), train_dataloader=loader,
                    train_cfg={"by_epoch": True, "max_epochs": 1},
                    optim_wrapper={"optimizer": {"type": "SGD", "lr": 0.01}},
                    default_hooks={"checkpoint": {"type": "CheckpointHook", "interval": 1}})
    runner.train()
    path = tmp_path / "work" / "epoch_1.pth"
    with pytest.raises(pickle.UnpicklingError, match="HistoryBuffer"):
        torch.load(path, weights_only=True)

    converted = load_backbone(path)
    assert (converted.format, converted.epoch) == ("mmselfsup", 1)
    assert converted.report.reader.startswith("inert unpickler")
    assert {"mmengine.logging.history_buffer.HistoryBuffer", "builtins.getattr"} <= set(converted.report.placeholders)
    model = runner.model
    _assert_converts(converted, model.backbone.state_dict(), nn.Sequential(*list(model.backbone.children())[:-2]))
    momentum = load_backbone(path, weights="momentum")
    ema_backbone = model.momentum_encoder.module[0]
    assert not torch.equal(ema_backbone.conv1.weight, model.backbone.conv1.weight)
    _assert_converts(momentum, ema_backbone.state_dict(), nn.Sequential(*list(ema_backbone.children())[:-2]))


def _lightly_moco(cfg, out_dir):
    import pytorch_lightning as pl
    from lightly.loss import NTXentLoss
    from lightly.models.modules import MoCoProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum

    class MoCo(pl.LightningModule):  # lightly's MoCo example, with Hydra-style hyperparameters
        def __init__(self, cfg, out_dir):
            super().__init__()
            self.save_hyperparameters()
            resnet = torchvision.models.resnet18()
            self.backbone = nn.Sequential(*list(resnet.children())[:-1])
            self.projection_head = MoCoProjectionHead(512, 512, 16)
            self.backbone_momentum = copy.deepcopy(self.backbone)
            self.projection_head_momentum = copy.deepcopy(self.projection_head)
            deactivate_requires_grad(self.backbone_momentum)
            deactivate_requires_grad(self.projection_head_momentum)
            self.criterion = NTXentLoss(memory_bank_size=(32, 16))

        def training_step(self, batch, batch_idx):
            update_momentum(self.backbone, self.backbone_momentum, m=0.5)
            update_momentum(self.projection_head, self.projection_head_momentum, m=0.5)
            (x,) = batch
            query = self.projection_head(self.backbone(x).flatten(start_dim=1))
            key = self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()
            return self.criterion(query, key)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return MoCo(cfg, out_dir)


@pytest.fixture(scope="module")
def lightning_run(tmp_path_factory):
    """One epoch of lightly's MoCo under PyTorch Lightning, hyperparameters an OmegaConf DictConfig and a Path."""
    pl = _need("pytorch_lightning")
    _need("lightly")
    from omegaconf import OmegaConf

    root = tmp_path_factory.mktemp("lightning")
    torch.manual_seed(0)
    model = _lightly_moco(OmegaConf.create({"lr": 0.1, "sizes": [32, 16]}), pathlib.Path(root / "out"))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, default_root_dir=str(root),
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, torch.utils.data.DataLoader(_images(), batch_size=4))
    trainer.save_checkpoint(root / "after_fit.ckpt")
    (saved,) = (root / "checkpoints").glob("*.ckpt")
    return model, saved, root / "after_fit.ckpt"


def test_lightning_checkpoint_with_omegaconf_and_path_hyperparameters(lightning_run):
    model, saved, after_fit = lightning_run
    assert saved.name == "epoch=0-step=2.ckpt"  # ModelCheckpoint's name: the index of the finished epoch
    for path in (saved, after_fit):
        converted = load_backbone(path)
        assert (converted.format, converted.epoch) == ("lightly", 1), path.name  # one epoch done reads 1
        assert {"omegaconf.dictconfig.DictConfig", "pathlib.PosixPath"} <= set(converted.report.placeholders)
        _assert_converts(converted, model.backbone.state_dict(), model.backbone, pooled=True)
        momentum = load_backbone(path, weights="momentum")
        assert not torch.equal(model.backbone_momentum[0].weight, model.backbone[0].weight)
        _assert_converts(momentum, model.backbone_momentum.state_dict(), model.backbone_momentum, pooled=True)


def test_lightly_backbone_saves(lightning_run, tmp_path):
    """lightly's tutorials: {'resnet18_parameters': backbone.state_dict()}, and the Sequential state dict bare."""
    model = lightning_run[0]
    named, bare = tmp_path / "model.pth", tmp_path / "backbone.pth"
    torch.save({"resnet18_parameters": model.backbone.state_dict()}, named)
    torch.save(model.backbone.state_dict(), bare)
    for path, location in ((named, "resnet18_parameters"), (bare, "the top level")):
        converted = load_backbone(path)
        assert (converted.format, converted.report.location) == ("resnet-children", location)
        assert converted.report.used["4.0.conv1.weight"] == "layer1.0.conv1.weight"
        _assert_converts(converted, model.backbone.state_dict(), model.backbone, pooled=True)


@pytest.fixture(scope="module")
def timm_run(tmp_path_factory):
    """timm's train.py saving path: CheckpointSaver with a ModelEmaV3, two epochs of two SGD steps."""
    _need("timm")
    import timm
    from timm.utils import CheckpointSaver, ModelEmaV3

    root = tmp_path_factory.mktemp("timm")
    torch.manual_seed(0)
    model = trained_like(timm.create_model("resnet18", pretrained=False, num_classes=10)).train()
    ema = ModelEmaV3(model, decay=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    saver = CheckpointSaver(model, optimizer, args=argparse.Namespace(model="resnet18", epochs=2), model_ema=ema,
                            checkpoint_dir=str(root), recovery_dir=str(root), max_history=2)
    for epoch in range(2):
        for (x,) in torch.utils.data.DataLoader(_images(), batch_size=4):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), torch.zeros(len(x), dtype=torch.long)).backward()
            optimizer.step()
            ema.update(model)
        saver.save_checkpoint(epoch, metric=float(epoch))
    return model.eval(), ema.module.eval(), root


@pytest.mark.parametrize("name,epochs", [("checkpoint-0.pth.tar", 1), ("checkpoint-1.pth.tar", 2),
                                         ("last.pth.tar", 2), ("model_best.pth.tar", 2)])
def test_timm_checkpoint_saver_files_with_ema(name, epochs, timm_run):
    model, ema, root = timm_run
    path = root / name
    converted = load_backbone(path)
    assert (converted.format, converted.epoch) == ("timm", epochs)
    assert converted.report.reader == "torch.load(weights_only=True)"
    if epochs == 2:  # the last epoch's weights; checkpoint-0 holds the first epoch's
        _assert_converts(converted, _no_fc(model.state_dict()), _timm_trunk(model))
        averaged = load_backbone(path, weights="ema")
        assert averaged.report.weights["prefix"] == "state_dict_ema"
        _assert_converts(averaged, _no_fc(ema.state_dict()), _timm_trunk(ema))
    else:
        assert not torch.equal(converted.state_dict["conv1.weight"], model.conv1.weight)


def _no_fc(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _timm_trunk(model) -> nn.Module:
    class Trunk(nn.Module):
        def forward(self, x):
            return model.forward_features(x)

    return Trunk()


def test_timm_hugging_face_export_safetensors_and_bin(timm_run, tmp_path):
    """timm's save_for_hf (push_to_hf_hub's writer): model.safetensors and pytorch_model.bin."""
    from timm.models import _hub

    model = timm_run[0]
    _hub.save_for_hf(model, str(tmp_path), safe_serialization="both")
    for name, reader in (("model.safetensors", "safetensors"), ("pytorch_model.bin", "torch.load(weights_only=True)")):
        converted = load_backbone(tmp_path / name)
        assert (converted.format, converted.report.reader) == ("torchvision", reader)
        _assert_converts(converted, _no_fc(model.state_dict()), _timm_trunk(model))


def test_safetensors_state_dict_and_damaged_file(tmp_path):
    _need("safetensors")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = trained_like(torchvision.models.resnet18())
    path = tmp_path / "resnet18.safetensors"
    save_file(model.state_dict(), path, metadata={"format": "pt"})
    converted = load_backbone(path)
    assert converted.format == "torchvision"
    _assert_converts(converted, _no_fc(model.state_dict()), nn.Sequential(*list(model.children())[:-2]))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.safetensors: damaged or truncated safetensors file"):
        load_backbone(truncated)
