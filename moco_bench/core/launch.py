"""Jobs through submitit, for pretraining and evaluations: SLURM, or local processes on this machine.

:func:`submit` sends a :class:`DistributedJob` as one job of ``nodes`` x ``tasks_per_node`` tasks (one task per
GPU). Each task exports torch.distributed's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) from submitit's JobEnvironment, so the job function joins the process group
with ``init_method="env://"`` exactly as under torchrun. ``cluster="local"`` runs the same job as local
subprocesses and ``cluster="debug"`` in this process: the code path the tests and dry runs use.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Optional

import submitit
from submitit.helpers import Checkpointable, TorchDistributedEnvironment

from moco_bench.core.errors import ConfigError

# Values written into a job script (sbatch lines) may only use these characters: a newline or a shell
# metacharacter in a job name, partition or folder would become a line of the script. Bad values are
# rejected, never escaped.
_TOKEN = re.compile(r"[A-Za-z0-9._+-]{1,128}")
_PATH = re.compile(r"[A-Za-z0-9._/+=@,~-]{1,4096}")


def job_script_value(what: str, value: Any, path: bool = False) -> str:
    """``value`` as text, after checking it is safe to write into an sbatch script.

    Raises:
        ConfigError: the value holds a character outside the allowed set (whitespace, quotes, ``$``, ``;`` ...).
    """
    text = str(value)
    allowed = _PATH if path else _TOKEN
    if not allowed.fullmatch(text):
        chars = "letters, digits and . _ + - = @ , ~ /" if path else "letters, digits and . _ + -"
        raise ConfigError(f"{what} {text!r} cannot go into a SLURM job script: only {chars} are allowed "
                          "(the value is rejected, not escaped)")
    return text


class DistributedJob(Checkpointable):
    """``fn(*args, **kwargs)`` run in every task of a job, with the process-group environment set.

    Checkpointable: on preemption or timeout, submitit requeues ``self.checkpoint()``'s submission (by default
    the same call; subclasses change the arguments, e.g. to resume from the latest checkpoint).
    """

    def __init__(self, fn: Callable, *args: Any, **kwargs: Any):
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __call__(self) -> Any:
        # The device is chosen from LOCAL_RANK, so every task keeps all of its node's GPUs visible.
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        return self.fn(*self.args, **self.kwargs)


def submit(job: Callable[[], Any], *, folder: str | Path, nodes: int = 1, gpus_per_node: int = 0,
           tasks_per_node: Optional[int] = None, partition: Optional[str] = None, timeout_min: int = 60,
           cpus_per_task: Optional[int] = None, mem_gb: Optional[float] = None, name: str = "moco-bench",
           cluster: Optional[str] = None) -> submitit.Job:
    """Submit ``job`` (a callable taking no argument, e.g. a :class:`DistributedJob`); returns submitit's Job.

    ``tasks_per_node`` defaults to one per GPU (one when there is none). ``cluster``: None picks SLURM where
    it is available and local processes otherwise; ``"slurm"``, ``"local"`` or ``"debug"`` force one.
    ``job.result()`` (or ``job.results()``, one per task) waits for it and re-raises a task's error.
    """
    folder = job_script_value("job folder", Path(folder).expanduser().absolute(), path=True)
    params = dict(nodes=int(nodes), gpus_per_node=int(gpus_per_node),
                  tasks_per_node=int(tasks_per_node or max(1, gpus_per_node)), timeout_min=int(timeout_min),
                  name=job_script_value("job name", name))
    if cpus_per_task is not None:
        params["cpus_per_task"] = int(cpus_per_task)
    if mem_gb is not None:
        params["mem_gb"] = float(mem_gb)
    if partition is not None:
        params["slurm_partition"] = job_script_value("partition", partition)
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)  # creates the folder: after every check
    executor.update_parameters(**params)
    return executor.submit(job)


def evaluation_request(gpus: int, cpus: int, timeout_min: int, per_gpu_processes: bool) -> dict:
    """:func:`submit` keywords for one evaluation's ``resources`` block.

    A protocol that runs one process per GPU (the linear heads: DDP) gets one task per GPU, each with its share
    of the CPUs; one that starts its own processes (detectron2's launcher) or needs one (frozen features) gets
    one task holding every GPU it asks for. ``gpus: 0`` is a CPU-only job.
    """
    tasks = max(gpus, 1) if per_gpu_processes else 1
    return {"nodes": 1, "gpus_per_node": gpus, "tasks_per_node": tasks, "cpus_per_task": max(1, cpus // tasks),
            "timeout_min": timeout_min}
