"""The Python API: what the command line does, for a notebook or a script.

    import moco_bench
    record = moco_bench.evaluate("checkpoint_0199.pth.tar", "demo/imagenet_knn", data__root="/data/fmnist")
    record = moco_bench.evaluate(model, "imagenet_knn", out="results/runs")   # an nn.Module (a ResNet)
    df = moco_bench.load_results("results/runs")                                # one row per (result, metric)
    moco_bench.report(["results/runs"], "results/report")                       # report.html, tables, plots

Protocols are named as on the command line (a shipped config by name, or any config by path); overrides are
keyword arguments with ``__`` for the dots of a key (``knn__k=[20]`` is ``knn.k=[20]``) or an ``overrides`` list
of ``key=value`` strings. A finished result is returned as stored rather than refused (``force=True`` recomputes).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import torch
from torch import nn

from moco_bench.core import paths
from moco_bench.core.atomic import atomic_torch_save
from moco_bench.core.errors import ResultExistsError


def module_file(module: nn.Module) -> Path:
    """An in-memory network as a checkpoint file the converter reads: its state dict, saved once under the data
    cache by the hash of its names, dtypes, shapes and values (the same weights give the same file, hence the same
    results folder)."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key]
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    path = paths.data_cache() / "modules" / f"{type(module).__name__}-{digest.hexdigest()[:16]}.pth"
    if not path.is_file():
        atomic_torch_save(path, state)
    return path


def _overrides(keywords: dict, listed: Optional[Iterable[str]]) -> List[str]:
    out = list(listed or [])
    for key, value in keywords.items():  # JSON is YAML: lists, numbers, true/false and null read back as given
        out.append(f"{key.replace('__', '.')}={value if isinstance(value, str) else json.dumps(value)}")
    return out


def evaluate(checkpoint, protocol: str, *, out: str | Path = "results/runs", device: str = "auto",
             label: Optional[str] = None, weights: Optional[str] = None, force: bool = False, workers: int = 2,
             overrides: Optional[Iterable[str]] = None, **keyword_overrides) -> dict:
    """Run one protocol on ``checkpoint`` (a file, ``random:<arch>``, ``pixels:`` or an ``nn.Module``) and return its
    record (the JSON written under ``out``); a finished one is read back, not recomputed."""
    from moco_bench.core.env import resolve_device
    from moco_bench.engine.runner import evaluate_checkpoint
    from moco_bench.results.store import check_label, read_result

    if isinstance(checkpoint, nn.Module):
        label = label or f"{type(checkpoint).__name__} (in memory)"
        checkpoint = module_file(checkpoint)
    try:
        return evaluate_checkpoint(str(checkpoint), protocol, _overrides(keyword_overrides, overrides), out_root=out,
                                   force=force, device=resolve_device(device), workers=workers, weights=weights,
                                   label=check_label(label) if label else None)
    except ResultExistsError as e:
        if e.path is None:
            raise
        return read_result(e.path)


def load_results(path: str | Path | Sequence[str | Path]):
    """Every result under ``path`` (a folder, a file, or a list of them) as a pandas DataFrame, one row per
    (result, metric); files that are not results are listed in ``df.attrs["skipped"]``."""
    from moco_bench.results.store import load_results as load

    return load(list(path) if isinstance(path, (list, tuple)) else path)


def report(paths_: Sequence[str | Path] | str | Path, out: str | Path, *, published: bool = True,
           baseline: Optional[str] = None) -> Path:
    """``moco-bench tables``: report.html, report.md, the tables and plots of every result under ``paths_``;
    returns the path of report.md."""
    from moco_bench.results.published import DEFAULT_CSV
    from moco_bench.results.report import write_report

    results = [paths_] if isinstance(paths_, (str, Path)) else list(paths_)
    return write_report(results, out, published=DEFAULT_CSV if published else None, baseline=baseline)
