"""A frozen network prepared once for inference, so that each forward computes and does nothing else.

Four ways to run it, all the same arithmetic up to float rounding:

- ``eager``: the modules as they are, NCHW (``features.channels_last: true`` makes it ``channels_last``).
- ``channels_last``: the eager modules with NHWC weights and activations. On the CPU oneDNN then re-lays-out
  far fewer tensors per call than in NCHW.
- ``mkldnn``: the network traced once with torch.fx (``optimize_for_inference``): BatchNorm folded into the
  convolutions, weights prepacked in oneDNN's blocked layout. fp32 on a CPU only.
- ``inductor``: channels_last, compiled by ``torch.compile`` with freezing: the weights become constants, BatchNorm
  is folded, convolutions are prepacked and the element-wise tails are fused into generated kernels. Compiling
  costs seconds to a minute per network and input shape (a partial last batch compiles once more), so it pays
  off on long extractions: ResNet-50 at 224 px, batch 32, two AVX-512 cores: 23.2 images/s against 17.5 for
  channels_last (1.33x; 14 s to compile).

``auto`` is the measured winner per device for any run length (``benchmarks/bench_features.py``, ResNet-50 at
224 px on two AVX-512 cores: NCHW 12.2 images/s, channels_last 14.5, mkldnn 14.0): ``channels_last`` on a CPU;
on a GPU the configured layout (cuDNN prepares its own kernels). bf16 is faster still on such a CPU (24.5 with
channels_last) but changes the features (demo kNN -0.5), so it stays a precision the config must ask for.
"""

from __future__ import annotations

import warnings
from typing import Tuple

import torch
from torch import nn

from moco_bench.core.errors import ConfigError

RUNTIMES = ("auto", "eager", "channels_last", "mkldnn", "inductor")
NHWC = ("channels_last", "inductor")  # runtimes whose inputs should be channels-last too


def choose_runtime(runtime: str, device: str, precision: str, channels_last: bool = False) -> str:
    """What ``runtime`` (with ``features.channels_last``) resolves to on ``device`` at ``precision``: ``eager``,
    ``channels_last``, ``mkldnn`` or ``inductor``. An impossible explicit choice is an error."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"features.runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    cpu = torch.device(device).type == "cpu"
    if runtime == "mkldnn" and not (cpu and precision == "fp32" and torch.backends.mkldnn.is_available()):
        raise ConfigError(f"features.runtime mkldnn runs fp32 on a CPU with oneDNN (asked: {precision} on {device})")
    if runtime == "auto":
        runtime = "channels_last" if cpu else "eager"
    return "channels_last" if runtime == "eager" and channels_last else runtime


def _sound(module: nn.Module) -> bool:
    """Finite tensors and non-negative BatchNorm variances: what folding BatchNorm into convolutions needs."""
    tensors = [t for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()]
    finite = all(bool(torch.isfinite(t).all()) for t in tensors)
    variances = [m.running_var for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 and m.running_var is not None]
    return finite and all(bool((v >= 0).all()) for v in variances)


def prepare(module: nn.Module, device: str, runtime: str, precision: str = "fp32",
            channels_last: bool = False) -> Tuple[nn.Module, str]:
    """``(the module to call, the runtime it runs)``: eval mode on ``device``, then the runtime's preparation.
    Callers make the inputs of a runtime in :data:`NHWC` channels-last too."""
    module = module.eval().to(device)
    chosen = choose_runtime(runtime, device, precision, channels_last)
    if chosen in ("mkldnn", "inductor") and not _sound(module):
        chosen = "eager"  # folding a NaN or a negative variance into the weights would hide it; eager reports it
    if chosen == "mkldnn":
        from torch.fx.experimental.optimization import optimize_for_inference

        with torch.no_grad(), warnings.catch_warnings():  # torch.utils.mkldnn's modules use torch.jit.script_method
            warnings.filterwarnings("ignore", "`torch.jit.script_method` is deprecated", FutureWarning)
            return optimize_for_inference(module), "mkldnn"
    if chosen in NHWC:
        module = module.to(memory_format=torch.channels_last)
    if chosen == "inductor":
        module = torch.compile(module, options={"freezing": True})
    return module, chosen
