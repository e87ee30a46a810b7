"""eval-all: every evaluation of a suite on one checkpoint, resumable, failures isolated, each on the machine
it asks for.

The checkpoint is converted once; evaluations over the same frozen features share the feature cache. A finished
result is skipped (an interrupted run resumes), a failing evaluation is recorded and the others go on, and a
missing dataset or optional library is reported as skipped with its reason.

Launchers (one mechanism, moco_bench.core.launch, for pretraining and evaluations):

- ``local``: in this process; an evaluation that runs one process per GPU (the linear heads) and asks for several
  GPUs that this machine has is started as that many local processes (submitit's local executor, which sets
  torchrun's environment), so it gets every GPU it asks for. Detection starts its own processes
  (detectron2's launcher, ``resources.gpus`` of them).
- ``slurm``: one job per evaluation, sized by its config's ``resources`` block.

eval-all itself is one process: under torchrun every rank would run every evaluation, so that is refused.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import List, Optional

from moco_bench.core.errors import Busy, ConfigError, ResultExistsError
from moco_bench.core.launch import DistributedJob, evaluation_request, submit
from moco_bench.engine.runner import checkpoint_id, run_evaluation
from moco_bench.engine.suite import Suite, SuiteEntry
from moco_bench.evaluators.schema import load_evaluation, spec
from moco_bench.results.store import is_finished, read_result

log = logging.getLogger(__name__)


def run_one(checkpoint: str, config_path: str, overrides: List[str], out_root: str, force: bool, device: str,
            workers: int, weights: Optional[str] = None, label: Optional[str] = None) -> dict:
    """One evaluation in its own process(es) (a job): convert, evaluate, write the record (rank 0)."""
    from moco_bench.convert import load_backbone

    cfg = load_evaluation(config_path, overrides)
    return run_evaluation(load_backbone(checkpoint, weights=weights), cfg, out_root=out_root, force=force,
                          device=device, workers=workers, label=label)


def _processes(entry: SuiteEntry, device: str) -> int:
    """How many local processes an evaluation gets here: one per requested GPU, for a per-GPU protocol on CUDA."""
    if not spec(str(entry.cfg.evaluator)).per_gpu_processes or not device.startswith("cuda"):
        return 1
    import torch

    return max(1, min(int(entry.cfg.resources.gpus), torch.cuda.device_count()))


def eval_all(checkpoint: str, suite: Suite, out_root: Path | str = "results/runs", force: bool = False,
             device: str = "cpu", workers: int = 2, launcher: str = "local", slurm: Optional[dict] = None,
             weights: Optional[str] = None, label: Optional[str] = None) -> List[dict]:
    """Run every evaluation of ``suite``; returns one summary row per evaluation.

    ``slurm``: ``partition`` and, for tests, ``cluster`` (submitit's ``local`` or ``debug``) and ``folder``.
    ``label``: the checkpoint's name in tables and plots, stored in every record (``--label``).
    """
    from moco_bench.convert import load_backbone

    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ConfigError("eval-all starts each evaluation's processes itself (one per GPU where a protocol runs "
                          "one per GPU); run it as one process, not under torchrun")
    if launcher not in ("local", "slurm"):
        raise ConfigError(f"unknown launcher {launcher!r} (local or slurm)")
    backbone = load_backbone(checkpoint, weights=weights)
    out_dir = Path(out_root) / checkpoint_id(backbone)
    summary, todo = [], []
    for entry in suite.entries:
        result_path = out_dir / f"{entry.name}.json"
        if not force and is_finished(result_path):
            summary.append(_row(entry.name, read_result(result_path), note="already done"))
        else:
            todo.append(entry)
    args = (str(checkpoint), str(out_root), force, device, workers, weights, label)
    for entry in todo:
        t0 = time.perf_counter()
        log.info("== %s (%s)", entry.name, entry.config_path)
        try:
            record, note = _launch(entry, backbone, args, launcher, dict(slurm or {}))
        except (Busy, ResultExistsError) as e:  # another eval-all runs it, or finished it meanwhile
            log.info("%s: %s", entry.name, e)
            summary.append({"evaluation": entry.name, "status": "not run", "metrics": "", "reason": str(e),
                            "seconds": None, "note": "another process"})
            continue
        summary.append(_row(entry.name, record, seconds=time.perf_counter() - t0, note=note))
    return summary


def _launch(entry: SuiteEntry, backbone, args: tuple, launcher: str, slurm: dict) -> tuple:
    """(record, note) of one evaluation, run where its launcher and resources say."""
    checkpoint, out_root, force, device, workers, weights, label = args
    if launcher == "slurm":
        return _job(entry, args, slurm, processes=None)
    if _processes(entry, device) > 1:
        return _job(entry, args, {"cluster": "local"}, processes=_processes(entry, device))
    return run_evaluation(backbone, entry.cfg, out_root=out_root, force=force, device=device, workers=workers,
                          label=label), ""


def _job(entry: SuiteEntry, args: tuple, slurm: dict, processes: Optional[int]) -> tuple:
    """Submit one evaluation as a job sized by its ``resources`` and wait for its record (rank 0's)."""
    checkpoint, out_root, force, device, workers, weights, label = args
    res = entry.cfg.resources
    request = evaluation_request(int(res.gpus), int(res.cpus), int(res.timeout_min),
                                 spec(str(entry.cfg.evaluator)).per_gpu_processes)
    if processes is not None:  # a local run: as many processes as this machine's GPUs allow
        request.update(gpus_per_node=processes, tasks_per_node=processes)
    folder = slurm.get("folder", Path(out_root) / "slurm_logs" / entry.name)
    job = submit(DistributedJob(run_one, checkpoint, str(entry.config_path), entry.overrides, out_root, force,
                                device, workers, weights, label),
                 folder=folder, partition=slurm.get("partition"), name=f"eval-{entry.name}",
                 cluster=slurm.get("cluster"), **request)
    log.info("%s: job %s (%s)", entry.name, job.job_id, request)
    results = job.results()
    return results[0], f"job {job.job_id}, {request['tasks_per_node']} process(es)"


def _row(name: str, record: dict, seconds: float | None = None, note: str = "") -> dict:
    metrics = record.get("metrics", {})
    shown = ", ".join(f"{k} {v:.2f}" for k, v in list(metrics.items())[:4])
    reason = (record.get("error") or "").splitlines()[0] if record.get("error") else ""
    return {"evaluation": name, "status": record["status"], "metrics": shown, "reason": reason,
            "seconds": round(seconds, 1) if seconds is not None else None, "note": note}
