"""How each pretraining step computes: precision, memory layout, and where the images are decoded and augmented.

The published recipe is fp32, NCHW, PIL decoding and augmentation in the loader workers (main_moco.py). The other
settings exist to keep GPUs fed and fast: bf16/fp16 autocast (fp16 with a gradient scaler), channels_last
activations, and the tensor pipeline (the workers only read files; the device decodes them, nvjpeg on a GPU, and
applies the same augmentations to tensors). Each is recorded as a deviation of the recipe until shown equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from omegaconf import DictConfig

from moco_bench.core.config import resolved

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class StepCompute:
    dtype: Optional[torch.dtype]  # autocast dtype; None: fp32
    scaler: Optional[torch.amp.GradScaler]  # fp16 only
    channels_last: bool
    augment: Optional[Callable]  # the device's (encoded images, device) -> (im_q, im_k); None: made in the workers

    def inputs(self, images, device: torch.device):
        """The two views on ``device``, in the configured memory layout."""
        if self.augment is not None:
            views = self.augment(images, device)
        else:
            views = [x.to(device, non_blocking=True) for x in images]
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return [v.contiguous(memory_format=fmt) for v in views]

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    def step(self, loss: torch.Tensor, optimizer) -> None:
        """Backward and update; with fp16, through the scaler (a step whose gradients overflow is skipped)."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


def step_compute(cfg: DictConfig, device: torch.device) -> StepCompute:
    from moco_bench.pretrain.data import in_workers, tensor_augment

    precision = str(cfg.compute.precision)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    pipeline = str(cfg.data.pipeline)
    on_step = pipeline != "pil" and not in_workers(cfg, device)
    augment = tensor_augment(resolved(cfg.transform), pipeline) if on_step else None
    return StepCompute(DTYPES[precision], scaler, bool(cfg.compute.channels_last), augment)
