"""What produced a number: library versions, git revision, device."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict

import moco_bench

_PACKAGES = ("torch", "torchvision", "numpy", "faiss-cpu", "faiss-gpu", "cyanure", "scikit-learn", "detectron2",
             "pb1-detectron2", "pycocotools", "omegaconf", "pandas")


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The project's git revision, with ``-dirty`` when the work tree has changes."""
    root = Path(moco_bench.__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def strict_fp32() -> None:
    """fp32 means fp32 on GPUs too: PyTorch lets cuDNN convolutions use TF32 tensor cores by default (Ampere and
    later), which rounds their inputs to 10 bits of mantissa. The published protocols ran in fp32 on V100s (no
    TF32), so it is off; reduced precision is asked for by name (``precision: bf16 | fp16``)."""
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def environment(device: str = "cpu", world_size: int = 1) -> Dict[str, Any]:
    versions = {p: v for p in _PACKAGES if (v := _version(p)) is not None}
    extra = {}
    if str(device).startswith("cuda"):
        import torch

        extra = {"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
                 "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32}}
    return {**extra,
        "moco_bench": moco_bench.__version__,
        "git_revision": git_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "device": device,
        "world_size": world_size,
    }


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve_device(requested: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a CUDA device is visible, else ``cpu``; ``cpu``, ``cuda`` and ``cuda:N`` are
    checked (asking for CUDA where there is none is an error, not a silent CPU run)."""
    import torch

    from moco_bench.core.errors import ConfigError

    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = requested.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise ConfigError(f"device {requested!r}: expected auto, cpu, cuda or cuda:N")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {requested!r}: CUDA is not available here (use --device cpu or auto)")
    if index and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"device {requested!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if kind == "cuda":
        strict_fp32()
    return requested


def available_memory(device) -> int | None:
    """Bytes a new allocation can take on ``device`` (a torch device or its name): CUDA's free memory, or the
    host's ``MemAvailable``; None where neither can be read."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None
