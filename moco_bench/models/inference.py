"""A frozen network prepared once for inference, so that each forward computes and does nothing else.

In eager mode on the CPU, oneDNN re-lays-out every convolution's weights on every call (for a ResNet-50 forward
more than half of the time), and eval-mode BatchNorm runs as separate passes over the activations. The
``mkldnn`` runtime traces the network once with torch.fx (``optimize_for_inference``): BatchNorm folded into
the convolutions, the weights prepacked in oneDNN's blocked layout and the activations kept in it between
layers. The arithmetic is fp32 throughout, equal to the eager network up to rounding (the folded BatchNorm).

``auto`` picks by device, from ``benchmarks/bench_features.py``'s measurements: ``mkldnn`` for fp32 on a CPU
with oneDNN, else ``eager`` (on GPUs cuDNN prepares its own kernels, and autocast needs the eager modules).
"""

from __future__ import annotations

import warnings
from typing import Tuple

import torch
from torch import nn

from moco_bench.core.errors import ConfigError

RUNTIMES = ("auto", "eager", "mkldnn")


def choose_runtime(runtime: str, device: str, precision: str) -> str:
    """The runtime ``auto`` stands for on ``device`` at ``precision``; an impossible explicit choice is an error."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"features.runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    cpu = torch.device(device).type == "cpu"
    usable = cpu and precision == "fp32" and torch.backends.mkldnn.is_available()
    if runtime == "auto":
        return "mkldnn" if usable else "eager"
    if runtime == "mkldnn" and not usable:
        raise ConfigError(f"features.runtime mkldnn runs fp32 on a CPU with oneDNN (asked: {precision} on {device})")
    return runtime


def _sound(module: nn.Module) -> bool:
    """Finite tensors and non-negative BatchNorm variances: what folding BatchNorm into convolutions needs."""
    tensors = [t for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()]
    finite = all(bool(torch.isfinite(t).all()) for t in tensors)
    variances = [m.running_var for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 and m.running_var is not None]
    return finite and all(bool((v >= 0).all()) for v in variances)


def prepare(module: nn.Module, device: str, runtime: str, precision: str = "fp32",
            channels_last: bool = False) -> Tuple[nn.Module, str]:
    """``(the module to call, how it was prepared)``: eval mode on ``device``, then the runtime's preparation."""
    module = module.eval().to(device)
    chosen = choose_runtime(runtime, device, precision)
    if chosen == "mkldnn" and not _sound(module):
        chosen = "eager"  # folding a NaN or a negative variance into the weights would hide it; eager reports it
    if chosen == "mkldnn":
        from torch.fx.experimental.optimization import optimize_for_inference

        with torch.no_grad(), warnings.catch_warnings():  # torch.utils.mkldnn's modules use torch.jit.script_method
            warnings.filterwarnings("ignore", "`torch.jit.script_method` is deprecated", FutureWarning)
            return optimize_for_inference(module), "mkldnn: BatchNorm folded, oneDNN-prepacked weights (torch.fx)"
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    return module, "eager" + (", channels_last" if channels_last else "")
