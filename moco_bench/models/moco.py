"""MoCo: a query encoder, a momentum key encoder and a queue of negative keys.

MoCo v1: He et al., "Momentum Contrast for Unsupervised Visual Representation Learning" (arXiv:1911.05722);
v2 adds the MLP head (Chen et al., arXiv:2003.04297). Module and buffer names follow facebookresearch/moco's
``moco/builder.py`` so that a checkpoint's keys are ``module.encoder_q.*``, ``module.encoder_k.*``,
``module.queue`` and ``module.queue_ptr``, readable by every tool that reads the official checkpoints.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn

from moco_bench.core import distributed
from moco_bench.models import resnets


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that, in training, normalizes each of ``num_splits`` groups of the batch with its own statistics
    (sample i is in group i % num_splits), in one pass; the running statistics are the groups' average.

    Shuffle BN on a single device, as in the MoCo authors' CIFAR-10 notebook. Same parameters and buffers as
    BatchNorm2d, so a checkpoint keeps the torchvision layout, and evaluation is plain BatchNorm.
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs):
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        n, c, h, w = x.shape
        g = self.num_splits
        if n % g:
            raise ValueError(f"batch {n} is not a multiple of bn_splits={g}")
        mean, var = self.running_mean.repeat(g), self.running_var.repeat(g)
        out = F.batch_norm(x.contiguous().view(n // g, c * g, h, w), mean, var, self.weight.repeat(g),
                           self.bias.repeat(g), True, self.momentum, self.eps)
        with torch.no_grad():
            self.running_mean.copy_(mean.view(g, c).mean(0))
            self.running_var.copy_(var.view(g, c).mean(0))
            self.num_batches_tracked.add_(1)
        return out.view(n, c, h, w)


def make_encoder(arch: str, dim: int, mlp: bool, bn_splits: int = 1) -> nn.Module:
    """The network ``arch`` names (:func:`moco_bench.models.resnets.build`) with an ``fc`` of ``dim`` outputs; v2's
    head is Linear-ReLU before that fc."""
    norm = partial(SplitBatchNorm2d, num_splits=bn_splits) if bn_splits > 1 else None
    encoder = resnets.build(arch, num_classes=dim, norm_layer=norm)
    if mlp:
        hidden = encoder.fc.weight.shape[1]
        encoder.fc = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), encoder.fc)
    return encoder


class MoCo(nn.Module):
    """Returns InfoNCE logits ``[l_pos, l_neg] / T`` and their labels (the positive is class 0).

    Shuffle BN keeps a query and its key out of the same BN batch, so that BN statistics cannot leak which
    key is positive (MoCo paper, section 3.3). Across ranks the key batch is dealt to the ranks in a random
    order, each rank being one BN group. In a single process, ``bn_splits`` > 1 gives both encoders
    :class:`SplitBatchNorm2d` (the groups stand for GPUs) and the keys are shuffled over the groups.
    """

    def __init__(self, arch: str = "resnet50", dim: int = 128, K: int = 65536, m: float = 0.999, T: float = 0.07,
                 mlp: bool = False, bn_splits: int = 1):
        super().__init__()
        self.arch, self.K, self.m, self.T = arch, K, m, T
        self.encoder_q = make_encoder(arch, dim, mlp, bn_splits)
        self.encoder_k = make_encoder(arch, dim, mlp, bn_splits)
        self.encoder_k.load_state_dict(self.encoder_q.state_dict())
        self.encoder_k.requires_grad_(False)  # updated by momentum only
        self.register_buffer("queue", F.normalize(torch.randn(dim, K), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def momentum_update(self) -> None:
        """theta_k <- m * theta_k + (1 - m) * theta_q over the parameters (BN statistics are the key encoder's own),
        with torch's fused EMA."""
        get_ema_multi_avg_fn(self.m)(list(self.encoder_k.parameters()), list(self.encoder_q.parameters()), None)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest keys by this step's keys from all ranks, in rank order."""
        if distributed.world_size() > 1:
            keys = distributed.concat_all_gather(keys)
        n, ptr = keys.shape[0], int(self.queue_ptr)
        if self.K % n:
            raise ValueError(f"queue size K={self.K} is not a multiple of the global batch {n}")
        self.queue[:, ptr:ptr + n] = keys.T
        self.queue_ptr[0] = (ptr + n) % self.K

    @torch.no_grad()
    def _keys(self, im_k: torch.Tensor) -> torch.Tensor:
        if distributed.world_size() > 1:
            shuffled, idx_unshuffle = distributed.shuffle_across_ranks(im_k)
            return distributed.unshuffle_across_ranks(self.encoder_k(shuffled), idx_unshuffle)
        perm = torch.randperm(im_k.shape[0], device=im_k.device)
        return self.encoder_k(im_k[perm])[torch.argsort(perm)]

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor):
        """Under autocast the encoders run in the low precision and the logits in fp32 (or the model's own dtype
        when wider): InfoNCE at T 0.2 over K+1 near-equal similarities needs more than bf16's 8 bits of mantissa
        to rank them."""
        q = self.encoder_q(im_q)
        with torch.no_grad():
            self.momentum_update()
            k = self._keys(im_k)
        dtype = torch.promote_types(self.queue.dtype, torch.float32)
        with torch.autocast(q.device.type, enabled=False):
            q, k = F.normalize(q.to(dtype), dim=1), F.normalize(k.to(dtype), dim=1)
            l_pos = (q * k).sum(dim=1, keepdim=True)
            l_neg = q @ self.queue.clone()  # a copy: enqueue below changes the queue in place
            logits = torch.cat([l_pos, l_neg], dim=1) / self.T
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        self.enqueue(k)
        return logits, labels
