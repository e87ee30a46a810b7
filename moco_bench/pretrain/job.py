"""A pretraining run as a SLURM job (submitit); a requeued job resumes from the latest checkpoint."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf
from submitit.helpers import DelayedSubmission

from moco_bench.core.launch import DistributedJob
from moco_bench.pretrain import checkpoint


def pretrain_resolved(cfg: dict):
    from moco_bench.pretrain.train import pretrain

    return pretrain(OmegaConf.create(cfg))


class PretrainJob(DistributedJob):
    """``pretrain(cfg)`` in every task of the job; ``checkpoint()`` (called by submitit on preemption or
    timeout) resubmits it with ``resume`` set to the newest checkpoint of its output_dir."""

    def __init__(self, cfg: dict):
        super().__init__(pretrain_resolved, cfg)

    def checkpoint(self, *args, **kwargs) -> DelayedSubmission:
        cfg = dict(self.args[0])
        latest = checkpoint.latest_checkpoint(Path(cfg["output_dir"]))
        if latest is not None:
            cfg["resume"] = str(latest)
        return DelayedSubmission(PretrainJob(cfg))
