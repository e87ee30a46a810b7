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
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from moco_bench.core.errors import Busy, ConfigError, ResultExistsError
from moco_bench.core.launch import DistributedJob, evaluation_request, submit
from moco_bench.engine.fit import misfits
from moco_bench.engine.runner import checkpoint_id, run_evaluation
from moco_bench.engine.suite import Suite, SuiteEntry
from moco_bench.evaluators.catalog import load_evaluation, spec
from moco_bench.results.store import is_finished, read_result

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """How every evaluation of one eval-all call runs: on which conversion of the checkpoint, into which results
    root, on which device, under which label."""

    converted: str  # the conversion eval-all made, shared through the results folder (CONVERTED)
    sha256: str  # of the checkpoint (and copy) the conversion was made from
    out_root: str
    force: bool = False
    device: str = "cpu"
    workers: int = 2
    label: Optional[str] = None


CONVERTED = ".converted/backbone.pt"  # under the checkpoint's results folder


def run_one(job: Job, config_path: str, overrides: List[str]) -> dict:
    """One evaluation in its own process(es) (a submitit job): evaluate the shared conversion, write the record
    (rank 0)."""
    from moco_bench.convert.shared_copy import load_converted

    cfg = load_evaluation(config_path, overrides)
    return run_evaluation(load_converted(Path(job.converted), job.sha256), cfg, out_root=job.out_root,
                          force=job.force, device=job.device, workers=job.workers, label=job.label)


def _processes(entry: SuiteEntry, device: str) -> int:
    """How many local processes an evaluation gets here: one per requested GPU, for a per-GPU protocol on CUDA."""
    if not spec(str(entry.cfg.evaluator)).per_gpu_processes or not device.startswith("cuda"):
        return 1
    import torch

    return max(1, min(int(entry.cfg.resources.gpus), torch.cuda.device_count()))


def check_fit(backbone, suite: Suite, entries: List[SuiteEntry]) -> None:
    """Refuse, before any work, a suite whose evaluations the checkpoint does not fit, naming every one."""
    problems = {e.name: found for e in entries if (found := misfits(backbone, e.cfg))}
    if problems:
        listed = "; ".join(f"{name}: {' / '.join(p)}" for name, p in problems.items())
        raise ConfigError(f"{len(problems)} of {len(entries)} evaluations of suite {suite.name} do not fit "
                          f"{backbone.path} ({backbone.arch}): {listed}. Leave them out with --skip "
                          f"{','.join(problems)}, or override what they name")


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
    job = Job(str(out_dir / CONVERTED), backbone.sha256, str(out_root), force, device, workers, label)
    summary, todo = [], []
    for entry in suite.entries:
        result_path = out_dir / f"{entry.name}.json"
        if not force and is_finished(result_path):
            summary.append(_row(entry.name, read_result(result_path), note="already done"))
        else:
            todo.append(entry)
    check_fit(backbone, suite, todo)
    start = time.perf_counter()
    for i, entry in enumerate(todo):
        t0 = time.perf_counter()
        log.info("== [%d/%d] %s (%s)", i + 1, len(todo), entry.name, entry.config_path)
        try:
            record, note = _launch(entry, backbone, job, launcher, dict(slurm or {}))
        except (Busy, ResultExistsError) as e:  # another eval-all runs it, or finished it meanwhile
            log.info("%s: %s", entry.name, e)
            summary.append({"evaluation": entry.name, "status": "not run", "metrics": "", "reason": str(e),
                            "seconds": None, "note": "another process"})
            continue
        summary.append(_row(entry.name, record, seconds=time.perf_counter() - t0, note=note))
        _progress(i + 1, len(todo), time.perf_counter() - start)
    return summary


def _progress(done: int, total: int, elapsed: float) -> None:
    """One line after each evaluation: how many are done, the time so far and (at the mean pace) left."""
    left = elapsed / done * (total - done)
    log.info("eval-all: %d of %d done in %s%s", done, total, _duration(elapsed),
             f", about {_duration(left)} left" if done < total else "")


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{seconds:.0f} s" if seconds < 90 else f"{minutes} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def _launch(entry: SuiteEntry, backbone, job: Job, launcher: str, slurm: dict) -> tuple:
    """(record, note) of one evaluation, run where its launcher and resources say."""
    if launcher == "slurm" or _processes(entry, job.device) > 1:
        from moco_bench.convert.shared_copy import save_converted

        save_converted(backbone, Path(job.converted))  # once per checkpoint; every job's processes read it
    if launcher == "slurm":
        return _job(entry, job, slurm, processes=None)
    if _processes(entry, job.device) > 1:
        return _job(entry, job, {"cluster": "local"}, processes=_processes(entry, job.device))
    return run_evaluation(backbone, entry.cfg, out_root=job.out_root, force=job.force, device=job.device,
                          workers=job.workers, label=job.label), ""


def _job(entry: SuiteEntry, job: Job, slurm: dict, processes: Optional[int]) -> tuple:
    """Submit one evaluation as a job sized by its ``resources`` and wait for its record (rank 0's)."""
    res = entry.cfg.resources
    request = evaluation_request(int(res.gpus), int(res.cpus), int(res.timeout_min),
                                 spec(str(entry.cfg.evaluator)).per_gpu_processes)
    if processes is not None:  # a local run: as many processes as this machine's GPUs allow
        request.update(gpus_per_node=processes, tasks_per_node=processes)
    folder = slurm.get("folder", Path(job.out_root) / "slurm_logs" / entry.name)
    submitted = submit(DistributedJob(run_one, job, str(entry.config_path), entry.overrides), folder=folder,
                       partition=slurm.get("partition"), name=f"eval-{entry.name}", cluster=slurm.get("cluster"),
                       **request)
    log.info("%s: job %s (%s)", entry.name, submitted.job_id, request)
    results = submitted.results()
    return results[0], f"job {submitted.job_id}, {request['tasks_per_node']} process(es)"


REASON_WIDTH = 100  # a summary's reason cell; the record keeps the whole text


def _short_paths(text: str) -> str:
    """Long absolute paths as ``…/<last two parts>``, so that what went wrong fits the cell."""
    return re.sub(r"/[^\s:;,()]{40,}", lambda m: "…/" + "/".join(m.group(0).rsplit("/", 2)[-2:]), text)


def _row(name: str, record: dict, seconds: float | None = None, note: str = "") -> dict:
    metrics = record.get("metrics", {})
    shown = ", ".join(f"{k} {v:.2f}" for k, v in list(metrics.items())[:4])
    reason = _short_paths((record.get("error") or "").splitlines()[0]) if record.get("error") else ""
    if len(reason) > REASON_WIDTH:
        reason = reason[:REASON_WIDTH - 1] + "…"
    return {"evaluation": name, "status": record["status"], "metrics": shown, "reason": reason,
            "seconds": round(seconds, 1) if seconds is not None else None, "note": note}
