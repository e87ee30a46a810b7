"""Checkpoints in each foreign layout, built from one torchvision ResNet, for tests.

Each builder writes what the named codebase writes (key names, nesting, heads, momentum encoder, queue and
the metadata beside the weights) with the given model as the backbone, and returns the file keys that are
not backbone weights. Heads, queues and feature dims are tiny; the momentum copies are perturbed so that a
converter picking the wrong network fails the tests.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

DEMO_ARCH = "resnet18_small_w0.5"  # the demo configs' backbone (moco_bench.models.resnets.SMALL_IMAGE)


class BuiltCheckpoint(NamedTuple):
    path: Path
    dropped: set[str]  # file keys (relative to the weights container) that are not backbone weights


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN affine parameters and running statistics, so that no tensor equals its initialization (a BN
    tensor a loader failed to copy would show); returned in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0, 0.1, generator=gen)
                m.running_mean.normal_(0, 0.1, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.num_batches_tracked.fill_(1234)
    return model.eval()


def backbone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}


def _perturbed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A momentum copy whose every float tensor differs from the original (cheaper than noise at ResNet-50 size)."""
    return {k: v + 1 if v.is_floating_point() else v.clone() for k, v in state.items()}


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v for k, v in state.items()}


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


def _save(obj: dict, path: Path, dropped: Iterable[str]) -> BuiltCheckpoint:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return BuiltCheckpoint(path, set(dropped))


def make_moco_checkpoint(model: nn.Module, path: Path, mlp: bool = True, epoch: int = 200, dim: int = 16,
                         queue_len: int = 32, ddp: bool = True, arch: str = "resnet50") -> BuiltCheckpoint:
    """facebookresearch/moco main_moco.py: {epoch, arch, state_dict, optimizer}, DDP-prefixed encoder_q/k."""
    width = model.fc.in_features
    encoder_q = copy.deepcopy(model)
    encoder_q.fc = _mlp(width, width, dim) if mlp else nn.Linear(width, dim)
    q_state = encoder_q.state_dict()
    prefix = "module." if ddp else ""
    extra = {**_prefixed(f"{prefix}encoder_q.", {k: v for k, v in q_state.items() if k.startswith("fc.")}),
             **_prefixed(f"{prefix}encoder_k.", _perturbed(q_state)),
             f"{prefix}queue": F.normalize(torch.randn(dim, queue_len), dim=0),
             f"{prefix}queue_ptr": torch.zeros(1, dtype=torch.long)}
    state = {**_prefixed(f"{prefix}encoder_q.", q_state), **extra}
    optimizer = torch.optim.SGD(encoder_q.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4).state_dict()
    return _save({"epoch": epoch, "arch": arch, "state_dict": state, "optimizer": optimizer}, path, extra)


def make_mocov3_checkpoint(model: nn.Module, path: Path, epoch: int = 100, dim: int = 16, mlp_dim: int = 32,
                           arch: str = "resnet50") -> BuiltCheckpoint:
    """facebookresearch/moco-v3: module.base_encoder (fc = BN MLP), module.momentum_encoder, module.predictor."""
    width = model.fc.in_features
    base = copy.deepcopy(model)
    base.fc = nn.Sequential(nn.Linear(width, mlp_dim, bias=False), nn.BatchNorm1d(mlp_dim), nn.ReLU(),
                            nn.Linear(mlp_dim, dim, bias=False), nn.BatchNorm1d(dim, affine=False))
    predictor = nn.Sequential(nn.Linear(dim, mlp_dim, bias=False), nn.BatchNorm1d(mlp_dim), nn.ReLU(),
                              nn.Linear(mlp_dim, dim, bias=False))
    b_state = base.state_dict()
    extra = {**_prefixed("module.base_encoder.", {k: v for k, v in b_state.items() if k.startswith("fc.")}),
             **_prefixed("module.momentum_encoder.", _perturbed(b_state)),
             **_prefixed("module.predictor.", predictor.state_dict())}
    state = {**_prefixed("module.base_encoder.", b_state), **extra}
    return _save({"epoch": epoch, "arch": arch, "state_dict": state, "optimizer": {"state": {}, "param_groups": []},
                  "scaler": {"scale": 65536.0, "growth_factor": 2.0}}, path, extra)


def make_mmselfsup_checkpoint(model: nn.Module, path: Path, version: str = "1.x", epoch: int = 200,
                              dim: int = 16, queue_len: int = 32) -> BuiltCheckpoint:
    """mmselfsup MoCo v2: backbone, neck (MoCoV2Neck.mlp), momentum copy, queue; mmengine (1.x) or mmcv (0.x)."""
    width = model.fc.in_features
    neck = {f"mlp.{k}": v for k, v in _mlp(width, width, dim).state_dict().items()}
    backbone = backbone_state(model)
    if version == "1.x":  # momentum model: ExponentialMovingAverage(nn.Sequential(backbone, neck))
        extra = {**_prefixed("neck.", neck), **_prefixed("encoder_k.module.0.", _perturbed(backbone)),
                 **_prefixed("encoder_k.module.1.", _perturbed(neck)), "encoder_k.steps": torch.tensor(5000)}
        meta = {"epoch": epoch, "iter": 5000, "mmengine_version": "0.7.0", "dataset_meta": {}}
    elif version == "0.x":  # encoder_q = nn.Sequential(backbone, neck); backbone and neck also kept as attributes
        extra = {**_prefixed("encoder_q.0.", backbone), **_prefixed("encoder_q.1.", neck),
                 **_prefixed("neck.", neck), **_prefixed("encoder_k.0.", _perturbed(backbone)),
                 **_prefixed("encoder_k.1.", _perturbed(neck))}
        meta = {"epoch": epoch, "iter": 5000, "mmcv_version": "1.4.0", "time": "Mon Jan  1 00:00:00 2022"}
    else:
        raise ValueError(version)
    extra.update({"queue": F.normalize(torch.randn(dim, queue_len), dim=0),
                  "queue_ptr": torch.zeros(1, dtype=torch.long)})
    state = {**_prefixed("backbone.", backbone), **extra}
    return _save({"meta": meta, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}, path, extra)


def make_vissl_checkpoint(model: nn.Module, path: Path, epoch: int = 200, dim: int = 16,
                          queue_len: int = 32) -> BuiltCheckpoint:
    """VISSL MoCo: classy_state_dict.base_model.model.{trunk, heads}; the loss holds the queue and key encoder."""
    width = model.fc.in_features
    trunk = _prefixed("_feature_blocks.", backbone_state(model))
    heads = {f"0.clf.{k}": v for k, v in _mlp(width, width, dim).state_dict().items()}
    loss = {"queue": F.normalize(torch.randn(dim, queue_len), dim=0), "queue_ptr": torch.zeros(1, dtype=torch.long),
            **_prefixed("moco_encoder.trunk.", _perturbed(trunk)), **_prefixed("moco_encoder.heads.", heads)}
    classy = {"train": True, "base_model": {"model": {"trunk": trunk, "heads": heads}, "meta": {}},
              "meta": {}, "loss": loss, "optimizer": {"state": {}, "param_groups": []},
              "phase_idx": 2 * epoch - 2, "train_phase_idx": epoch - 1, "num_updates": 5000, "losses": [6.5]}
    extra = {**_prefixed("base_model.model.heads.", heads), **_prefixed("loss.", loss)}
    return _save({"phase_idx": 2 * epoch - 2, "iteration": 5000, "train_phase_idx": epoch - 1,
                  "iteration_num": 5000, "type": "consolidated", "classy_state_dict": classy}, path, extra)


def make_solo_learn_checkpoint(model: nn.Module, path: Path, epoch: int = 399, dim: int = 16,
                               queue_len: int = 32, num_classes: int = 10) -> BuiltCheckpoint:
    """solo-learn MoCo v2+ (PyTorch Lightning): backbone (fc = Identity), projector, momentum copies, queue."""
    width = model.fc.in_features
    projector = _mlp(width, width, dim).state_dict()
    classifier = nn.Linear(width, num_classes).state_dict()
    extra = {**_prefixed("projector.", projector), **_prefixed("momentum_backbone.", _perturbed(backbone_state(model))),
             **_prefixed("momentum_projector.", _perturbed(projector)), **_prefixed("classifier.", classifier),
             "queue": F.normalize(torch.randn(2, dim, queue_len), dim=1), "queue_ptr": torch.zeros(1, dtype=torch.long)}
    state = {**_prefixed("backbone.", backbone_state(model)), **extra}
    return _save({"epoch": epoch, "global_step": 5000, "pytorch-lightning_version": "2.0.9", "state_dict": state,
                  "loops": {}, "callbacks": {}, "optimizer_states": [{"state": {}, "param_groups": []}],
                  "lr_schedulers": [], "hyper_parameters": {"cfg": {"method": "mocov2plus"}}}, path, extra)


def make_lightly_checkpoint(model: nn.Module, path: Path, epoch: int = 100, sequential: bool = True,
                            prefix: str = "", dim: int = 16, bank: int = 32) -> BuiltCheckpoint:
    """lightly MoCo example (PyTorch Lightning): backbone = nn.Sequential(*resnet.children()[:-1]) or named."""
    width = model.fc.in_features
    body = nn.Sequential(*list(model.children())[:-1]).state_dict() if sequential else backbone_state(model)
    head = {f"layers.{k}": v for k, v in _mlp(width, width, dim).state_dict().items()}
    extra = {**_prefixed(f"{prefix}projection_head.", head),
             **_prefixed(f"{prefix}backbone_momentum.", _perturbed(body)),
             **_prefixed(f"{prefix}projection_head_momentum.", _perturbed(head)),
             f"{prefix}criterion.memory_bank.bank": F.normalize(torch.randn(dim, bank), dim=0),
             f"{prefix}criterion.memory_bank.bank_ptr": torch.zeros(1, dtype=torch.long)}
    state = {**_prefixed(f"{prefix}backbone.", body), **extra}
    return _save({"epoch": epoch, "global_step": 5000, "pytorch-lightning_version": "2.1.0", "state_dict": state,
                  "loops": {}, "callbacks": {}, "optimizer_states": [], "lr_schedulers": [],
                  "hyper_parameters": {}}, path, extra)


def make_dino_checkpoint(model: nn.Module, path: Path, epoch: int = 100, out_dim: int = 32) -> BuiltCheckpoint:
    """facebookresearch/dino main_dino.py: student (DDP) and teacher {backbone (fc = Identity), head}, args."""
    width = model.fc.in_features
    head = {**{f"mlp.{k}": v for k, v in _mlp(width, width, 8).state_dict().items()},
            "last_layer.weight_g": torch.ones(out_dim, 1), "last_layer.weight_v": torch.randn(out_dim, 8)}
    teacher = {**_prefixed("backbone.", backbone_state(model)), **_prefixed("head.", head)}
    student = _prefixed("module.", _perturbed(teacher))
    extra = {*(f"teacher.head.{k}" for k in head), *(f"student.{k}" for k in student)}
    args = argparse.Namespace(arch="resnet50", out_dim=out_dim, epochs=epoch, lr=0.0005)
    return _save({"student": student, "teacher": teacher, "optimizer": {"state": {}, "param_groups": []},
                  "epoch": epoch, "args": args, "dino_loss": {"center": torch.zeros(1, out_dim)}},
                 path, extra)


def exclude_bias_and_norm(p):
    """barlowtwins' main.py keeps this function in its LARS param groups, so torch.save pickles it by name."""
    return p.ndim == 1


def make_swav_checkpoint(model: nn.Module, path: Path, epoch: int = 100, dim: int = 16, hidden: int = 32,
                         prototypes: int = 24) -> BuiltCheckpoint:
    """facebookresearch/swav main_swav.py: {epoch (done), state_dict of the DDP-wrapped src/resnet50.py ResNet,
    whose projection_head (Linear, BatchNorm1d, ReLU, Linear) and prototypes sit beside the trunk, optimizer
    (LARC's), amp (apex)}."""
    width = model.fc.in_features
    head = nn.Sequential(nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, dim))
    extra = {**_prefixed("module.projection_head.", head.state_dict()),
             "module.prototypes.weight": torch.randn(prototypes, dim)}
    state = {**_prefixed("module.", backbone_state(model)), **extra}
    return _save({"epoch": epoch, "state_dict": state, "optimizer": {"state": {}, "param_groups": []},
                  "amp": {"loss_scaler0": {"loss_scale": 65536.0, "unskipped": 0}}}, path, extra)


def make_barlowtwins_checkpoint(model: nn.Module, path: Path, epoch: int = 300, sizes=(32, 32)) -> BuiltCheckpoint:
    """facebookresearch/barlowtwins main.py checkpoint.pth: {epoch (done), model (BarlowTwins under DDP:
    backbone with fc = Identity, projector of Linear/BatchNorm1d/ReLU, bn = BatchNorm1d(affine=False)),
    optimizer (LARS, whose param groups hold exclude_bias_and_norm)}."""
    dims = [model.fc.in_features, *sizes]
    layers = []
    for i in range(len(dims) - 2):
        layers += [nn.Linear(dims[i], dims[i + 1], bias=False), nn.BatchNorm1d(dims[i + 1]), nn.ReLU()]
    projector = nn.Sequential(*layers, nn.Linear(dims[-2], dims[-1], bias=False))
    extra = {**_prefixed("module.projector.", projector.state_dict()),
             **_prefixed("module.bn.", nn.BatchNorm1d(dims[-1], affine=False).state_dict())}
    state = {**_prefixed("module.backbone.", backbone_state(model)), **extra}
    groups = [{"params": [0], "lr": 0.2, "weight_decay": 1e-6, "momentum": 0.9, "eta": 0.001,
               "weight_decay_filter": exclude_bias_and_norm, "lars_adaptation_filter": exclude_bias_and_norm}]
    return _save({"epoch": epoch, "model": state, "optimizer": {"state": {}, "param_groups": groups}}, path, extra)


def make_bolts_moco_checkpoint(model: nn.Module, path: Path, epoch: int = 9, dim: int = 16, queue_len: int = 32,
                               version: str = "Moco_v2") -> BuiltCheckpoint:
    """Lightning Bolts, a Lightning checkpoint. Moco_v2 (pl_bolts/models/self_supervised/moco/moco2_module.py):
    encoder_q/encoder_k (torchvision ResNets, fc an MLP with use_mlp), buffers queue, queue_ptr, val_queue,
    val_queue_ptr. MoCo (moco_module.py): encoder_q/encoder_k (fc = Linear), head_q/head_k, and the queues as
    RepresentationQueue modules (queue.representations, queue.pointer, val_queue.*)."""
    width = model.fc.in_features
    encoder_q = copy.deepcopy(model)
    encoder_q.fc = _mlp(width, width, dim) if version == "Moco_v2" else nn.Linear(width, dim)
    q_state = encoder_q.state_dict()
    queues = {}
    for name in ("queue", "val_queue"):
        if version == "Moco_v2":
            queues.update({name: F.normalize(torch.randn(dim, queue_len), dim=0),
                           f"{name}_ptr": torch.zeros(1, dtype=torch.long)})
        else:
            queues.update({f"{name}.representations": F.normalize(torch.randn(dim, queue_len), dim=0),
                           f"{name}.pointer": torch.zeros([], dtype=torch.long)})
    heads = {} if version == "Moco_v2" else {**_prefixed("head_q.", _mlp(dim, dim, dim).state_dict()),
                                               **_prefixed("head_k.", _mlp(dim, dim, dim).state_dict())}
    extra = {**_prefixed("encoder_q.", {k: v for k, v in q_state.items() if k.startswith("fc.")}),
             **_prefixed("encoder_k.", _perturbed(q_state)), **heads, **queues}
    state = {**_prefixed("encoder_q.", q_state), **extra}
    return _save({"epoch": epoch, "global_step": 100, "pytorch-lightning_version": "1.9.5", "state_dict": state,
                  "loops": {}, "callbacks": {}, "optimizer_states": [], "lr_schedulers": [],
                  "hyper_parameters": {"base_encoder": "resnet18", "emb_dim": dim, "use_mlp": True}}, path, extra)


def make_byol_checkpoint(model: nn.Module, path: Path, projection: int = 16, hidden: int = 32) -> BuiltCheckpoint:
    """lucidrains/byol-pytorch byol_pytorch.py, BYOL(net).state_dict(): net (the ResNet, fc included), the same
    module again as online_encoder.net, online_encoder.projector and online_predictor (MLP: Linear, BatchNorm1d,
    ReLU, Linear), and target_encoder (a deep copy of online_encoder, created by the first forward)."""
    width = model.fc.in_features
    net = model.state_dict()
    online = {**_prefixed("net.", net), **_prefixed("projector.", _byol_mlp(width, projection, hidden))}
    target = {**_prefixed("net.", _perturbed(net)), **_prefixed("projector.", _byol_mlp(width, projection, hidden))}
    state = {**_prefixed("net.", net), **_prefixed("online_encoder.", online),
             **_prefixed("online_predictor.", _byol_mlp(projection, projection, hidden)),
             **_prefixed("target_encoder.", target)}
    return _save(state, path, set(state) - {f"net.{k}" for k in backbone_state(model)})


def _byol_mlp(dim: int, projection: int, hidden: int) -> dict[str, torch.Tensor]:
    return nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, projection)) \
        .state_dict()


def make_torchvision_checkpoint(model: nn.Module, path: Path) -> BuiltCheckpoint:
    """A plain torchvision state dict, classifier included."""
    return _save(model.state_dict(), path, ("fc.weight", "fc.bias"))


BUILDERS = {
    "moco": make_moco_checkpoint,
    "mocov3": make_mocov3_checkpoint,
    "mmselfsup": make_mmselfsup_checkpoint,
    "vissl": make_vissl_checkpoint,
    "solo-learn": make_solo_learn_checkpoint,
    "lightly": make_lightly_checkpoint,
    "dino": make_dino_checkpoint,
    "torchvision": make_torchvision_checkpoint,
    "swav": make_swav_checkpoint,
    "barlowtwins": make_barlowtwins_checkpoint,
    "bolts-moco": make_bolts_moco_checkpoint,
    "byol-pytorch": make_byol_checkpoint,
}
