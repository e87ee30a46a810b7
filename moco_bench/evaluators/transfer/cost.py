"""GPU hours of the transfer family for ``eval-all --plan`` (moco_bench/engine/plan.py): the feature passes (one
per split, shared through the feature cache as the plan shares them) plus the linear solvers' arithmetic at the
``linear_solvers.gflops_per_s`` of suites/costs.yaml.

- transfer_logreg: every L-BFGS evaluation is a forward and a backward product of the rows with the weights
  (4 n d K flops; VOC's K binary classifiers alike), at most ``1.25 max_iter`` evaluations per fit (torch's
  LBFGS default ``max_eval``), one fit per cost on the fitting rows and one refit on train + val.
- probe_grid: per epoch, every head's forward and weight gradient over the fitting rows (4 n d K flops per head).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Dict, Optional, Tuple

from moco_bench.core.config import resolved
from moco_bench.data.transforms import eval_size


@lru_cache(maxsize=8)
def _channels(arch: str) -> Dict[str, int]:
    from moco_bench.models import resnets
    from moco_bench.models.taps import stage_channels

    return stage_channels(resnets.build(arch, device="meta"))


def _dim(cfg, arch: str, layer: str) -> int:
    """Feature dimension of a pooled layer: channels x output cells (``output_size`` pooling)."""
    spec = cfg.features.pooling[layer]
    side = int(spec.get("output_size") or 1)
    return _channels(arch)[layer] * side * side


def _passes(cfg, arch, counts, costs, seen: set, splits) -> Tuple[Optional[float], int]:
    size, root, hours = eval_size(cfg.transform.test), str(resolved(cfg)["data"]["root"]), 0.0
    for split in dict.fromkeys(splits):
        key = (root, split, size)
        if key in seen:
            continue
        if counts.get(split) is None:
            return None, 0
        seen.add(key)
        hours += counts[split] * costs.image_seconds(arch, size) / 3600
    return hours, size


def hours(cfg, arch: str, counts: Dict[str, Optional[int]], costs, seen: set) -> Tuple[Optional[float], str]:
    """(GPU hours or None, how) of one transfer_logreg or probe_grid evaluation."""
    data = cfg.data
    val_split = data.get("val_split")
    splits = [str(data.train_split)] + ([str(val_split)] if val_split else []) + [str(data.test_split)]
    feature_h, size = _passes(cfg, arch, counts, costs, seen, splits)
    if feature_h is None:
        return None, "no image count for a split"
    rate = float(costs.table.linear_solvers.gflops_per_s) * 1e9
    layers = list(cfg.features.layers)
    classes = int(data.classes) if isinstance(data.classes, int) else len(data.classes)
    n_train = counts[str(data.train_split)]
    if str(cfg.evaluator) == "probe_grid":
        fit = n_train * (1 - float(cfg.grid.holdout_fraction))
        dims = sum(_dim(cfg, arch, name) for name in layers)
        flops = 4 * fit * classes * len(cfg.grid.lrs) * dims * int(cfg.grid.epochs)
        how = f"{len(layers) * len(cfg.grid.lrs)} heads x {cfg.grid.epochs} epochs"
    else:
        n_val = counts[str(val_split)] if val_split else 0
        fit = n_train if val_split else n_train * (1 - float(cfg.validation.fraction))
        evals = 1.25 * int(cfg.logreg.max_iter)
        d = _dim(cfg, arch, layers[0])
        flops = 4 * d * classes * evals * (int(cfg.logreg.wd_count) * fit + n_train + n_val)
        how = f"{cfg.logreg.wd_count} costs x <= {evals:.0f} L-BFGS evaluations"
    solver_h = flops / rate / 3600
    return feature_h + solver_h, f"features at {size} px {feature_h:.3f} h + {how} {solver_h:.3f} h"
