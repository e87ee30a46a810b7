"""``eval-all --plan``: what a suite would run on a checkpoint, what is done, whether each dataset is there and
whole, whether the checkpoint fits, and the GPU hours of each evaluation and of the rest of the suite, from the
throughputs of ``suites/costs.yaml`` (each with its source). Nothing is computed, converted or written.

Estimates by family: detectron2 protocols from iterations x published s/iter x GPUs x trials; frozen-feature
protocols from one backbone pass per (dataset, split, transform), shared the way the feature cache shares it;
linear protocols from their epochs over the training split plus their validations; the forward cost of a network
scales from the table's reference by FLOPs.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from omegaconf import DictConfig

from moco_bench.core.config import load_config, resolved
from moco_bench.core.errors import DataError, MocoBenchError
from moco_bench.core.paths import config_file
from moco_bench.data.check import check_data
from moco_bench.data.transforms import eval_size
from moco_bench.engine.fit import misfits, protocol_d2
from moco_bench.engine.runner import checkpoint_id
from moco_bench.engine.suite import Suite, SuiteEntry
from moco_bench.results.store import is_finished

COSTS = "costs"  # suites/costs.yaml
FEATURE_EVALUATORS = ("knn", "voc07_svm", "voc07_lowshot_svm", "mhead_linear_fast")
LINEAR_EVALUATORS = ("linear", "mhead_linear")
D2_EVALUATORS = ("detectron2", "detectron2_semseg", "densepose")


@lru_cache(maxsize=8)
def _gflops(arch: str, size: int) -> float:
    """Forward GFLOPs of one image (torch's FlopCounterMode on the meta device: no memory, no compute)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from moco_bench.models import resnets

    model = resnets.build(arch, device="meta").eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size, device="meta"))
    return counter.get_total_flops() / 1e9


class Costs:
    """The throughput table, read from ``suites/costs.yaml``."""

    def __init__(self, path: Optional[Path] = None):
        self.path = Path(path) if path else config_file(COSTS, "suites")
        table = load_config(self.path)
        self.features, self.d2, self.table = table.features, table.detectron2, table
        self.gpu = str(table.gpu)

    def image_seconds(self, arch: str, size: int) -> float:
        """GPU seconds of one forward pass of ``arch`` on one ``size`` px image."""
        ref = self.features.reference
        scale = 1.0 if arch == "pixels" else _gflops(arch, size) / _gflops(str(ref.arch), int(ref.size))
        return scale / float(self.features.images_per_s)

    def iteration(self, protocol: str) -> Optional[Tuple[float, str]]:
        row = self.d2.s_per_iter.get(protocol)
        return (float(row.value), str(row.source)) if row is not None else None


def _counts(cfg: DictConfig, check: Optional[dict]) -> Dict[str, Optional[int]]:
    """Images per split (or source): the dataset check's counts where it ran, else the published ones."""
    if check:
        return {name: int(c["images"]) for name, c in check.items()}
    data = resolved(cfg).get("data") or {}
    return {str(k): (int(v) if v is not None else None) for k, v in (data.get("expect") or {}).items()}


def _feature_hours(cfg, arch, counts, costs: Costs, seen: set) -> Tuple[Optional[float], str]:
    size, root, hours = eval_size(cfg.transform.test), str(resolved(cfg)["data"]["root"]), 0.0
    for split in dict.fromkeys([str(cfg.data.train_split), str(cfg.data.test_split)]):
        key = (root, split, size)
        if key in seen:
            continue  # the feature cache shares this pass with an earlier evaluation of the suite
        seen.add(key)
        if counts.get(split) is None:
            return None, f"no image count for {split}"
        hours += counts[split] * costs.image_seconds(arch, size) / 3600
    return hours, f"one pass per split at {size} px"


def _linear_hours(cfg, arch, counts, costs: Costs) -> Tuple[Optional[float], str]:
    from moco_bench.evaluators.linear.train import TrainConfig

    tc = TrainConfig.from_config(cfg)
    train, val = counts.get(str(cfg.data.train_split)), counts.get(str(cfg.data.test_split))
    if train is None or val is None:
        return None, "no image count for the splits"
    validations = sum(tc.validates(e) for e in range(1, tc.epochs + 1))
    size = int(cfg.transform.train.crop)
    seconds = (tc.epochs * train + validations * val) * costs.image_seconds(arch, size)
    return seconds / 3600, f"{tc.epochs} epochs, {validations} validations"


def _d2_hours(cfg, arch, costs: Costs) -> Tuple[Optional[float], str]:
    protocol = str((cfg.get("comparability") or {}).get("protocol") or cfg.name)
    row = costs.iteration(protocol)
    if row is None:
        return None, f"no s/iter for {protocol} in the table"
    try:
        d2 = protocol_d2(cfg, arch)
    except MocoBenchError:
        d2 = None
    if d2 is None:  # without detectron2 (or DensePose's project) the schedule cannot be read here
        return None, "detectron2 (and its project) needed to read the schedule"
    iterations = int(d2.SOLVER.MAX_ITER)
    trials = int(cfg.get("trials") or 1)
    hours = iterations * row[0] * int(costs.d2.gpus) * trials / 3600
    return hours, f"{iterations:,} iter x {row[0]} s/iter x {costs.d2.gpus} GPUs x {trials} trial(s) ({row[1]})"


def estimate(entry: SuiteEntry, arch: str, check: Optional[dict], costs: Costs, seen: set):
    """(GPU hours or None, how) of one evaluation."""
    cfg, evaluator = entry.cfg, str(entry.cfg.evaluator)
    if evaluator in D2_EVALUATORS:
        return _d2_hours(cfg, arch, costs)
    counts = _counts(cfg, check)
    if evaluator in FEATURE_EVALUATORS:
        return _feature_hours(cfg, arch, counts, costs, seen)
    if evaluator in LINEAR_EVALUATORS:
        return _linear_hours(cfg, arch, counts, costs)
    if evaluator in ("transfer_logreg", "probe_grid"):  # features + the solvers (evaluators/transfer/cost.py)
        from moco_bench.evaluators.transfer.cost import hours

        return hours(cfg, arch, counts, costs, seen)
    return None, f"no cost model for the {evaluator} evaluator"


def _data(cfg: DictConfig) -> Tuple[Optional[dict], str]:
    try:
        check = check_data(resolved(cfg), str(cfg.get("_source_") or cfg.name))
    except DataError as e:  # DatasetNotFound included
        return None, str(e)
    images = sum(c["images"] for c in check.values())
    return check, f"ok, {images:,} images in {len(check)} split(s)"


def plan(backbone, suite: Suite, out_root: Path | str, costs: Optional[Costs] = None) -> Tuple[List[dict], dict]:
    """One row per evaluation (state, data check, fit, GPU hours and how) and the totals."""
    costs = costs or Costs()
    out_dir, seen, rows = Path(out_root) / checkpoint_id(backbone), set(), []
    for entry in suite.entries:
        done = is_finished(out_dir / f"{entry.name}.json")
        check, data = _data(entry.cfg)
        problems = misfits(backbone, entry.cfg)
        hours, how = estimate(entry, backbone.arch, check, costs, seen)
        state = "done" if done else "does not fit" if problems else "to run" if check is not None else "skipped"
        rows.append({"evaluation": entry.name, "state": state, "data": data if check else f"missing: {data}",
                     "fit": "; ".join(problems) or "ok", "gpu_hours": hours, "estimate": how})
    todo = [r for r in rows if r["state"] == "to run"]
    totals = {"to_run": sum(r["gpu_hours"] or 0.0 for r in todo),
              "unestimated": [r["evaluation"] for r in todo if r["gpu_hours"] is None],
              "all": sum(r["gpu_hours"] or 0.0 for r in rows), "costs": str(costs.path), "gpu": costs.gpu}
    return rows, totals
