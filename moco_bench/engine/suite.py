"""Suites and eval-all: every evaluation of a suite on one checkpoint, resumable, failures isolated.

A suite (``suites/*.yaml``) lists evaluations by their ``evaluate/`` config and overrides::

    version: 1
    name: demo
    evaluations:
      - config: evaluate/demo/voc07_svm.yaml
        overrides: [svm.workers=2]

All configs are loaded and checked before anything runs, so a typo fails in a second, not after the first
hour. The checkpoint is converted once; evaluations over the same frozen features share the feature cache.
A finished result is skipped (an interrupted run resumes), a failing evaluation is recorded and the
others go on, and a missing dataset or optional library is reported as skipped with its reason.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from omegaconf import DictConfig, ListConfig

from moco_bench.core.config import load_config
from moco_bench.core.errors import ConfigError
from moco_bench.core.paths import project_file
from moco_bench.engine.runner import check_config, checkpoint_id, run_evaluation
from moco_bench.evaluators.schema import load_evaluation
from moco_bench.results.store import is_finished, read_result

log = logging.getLogger(__name__)


@dataclass
class SuiteEntry:
    config_path: Path
    overrides: List[str]
    cfg: DictConfig = field(repr=False)

    @property
    def name(self) -> str:
        return self.cfg.name


@dataclass
class Suite:
    name: str
    path: Path
    entries: List[SuiteEntry]


def load_suite(path: Path | str, extra_overrides: Optional[List[str]] = None) -> Suite:
    """Load a suite and every config it names; raises ConfigError naming the suite and entry on any problem."""
    path = project_file(path)
    raw = load_config(path)
    items = raw.get("evaluations")
    if not isinstance(items, ListConfig) or not items:
        raise ConfigError(f"{path}: a suite needs a non-empty 'evaluations' list")
    entries, names = [], set()
    for i, item in enumerate(items):
        if not isinstance(item, DictConfig) or "config" not in item:
            raise ConfigError(f"{path}: evaluations[{i}] needs a 'config' key (path to an evaluate/ config)")
        unknown = set(item.keys()) - {"config", "overrides"}
        if unknown:
            raise ConfigError(f"{path}: evaluations[{i}] has unknown keys {sorted(unknown)}")
        listed = item.get("overrides")
        if listed is not None and not isinstance(listed, ListConfig):
            raise ConfigError(f"{path}: evaluations[{i}].overrides should be a list of key=value strings")
        overrides = [str(o) for o in (listed or [])] + list(extra_overrides or [])
        config_path = project_file(str(item.config))
        try:
            cfg = load_evaluation(config_path, overrides)
            check_config(cfg)
        except ConfigError as e:
            raise ConfigError(f"{path}: evaluations[{i}]: {e}") from None
        except Exception as e:  # an unknown evaluator is a MocoBenchError too; keep the suite's name on it
            raise ConfigError(f"{path}: evaluations[{i}] ({item.config}): {e}") from None
        if cfg.name in names:
            raise ConfigError(f"{path}: two evaluations are named {cfg.name!r}; give one a name= override")
        names.add(cfg.name)
        entries.append(SuiteEntry(config_path, overrides, cfg))
    return Suite(str(raw.get("name", path.stem)), path, entries)


def _run_one(checkpoint: str, config_path: str, overrides: List[str], out_root: str, force: bool, device: str,
             workers: int) -> dict:
    """One evaluation in its own process (a SLURM job): convert, evaluate, write the record."""
    from moco_bench.convert import load_backbone

    cfg = load_evaluation(config_path, overrides)
    return run_evaluation(load_backbone(checkpoint), cfg, out_root=out_root, force=force, device=device,
                          workers=workers)


def eval_all(checkpoint: str, suite: Suite, out_root: Path | str = "results/runs", force: bool = False,
             device: str = "cpu", workers: int = 2, launcher: str = "local", slurm: Optional[dict] = None
             ) -> List[dict]:
    """Run every evaluation of ``suite``; returns one summary row per evaluation.

    ``launcher``: ``local`` runs in this process; ``slurm`` submits one submitit job per evaluation (an
    array), and ``slurm["cluster"]`` may name submitit's ``local`` or ``debug`` executors for testing.
    """
    from moco_bench.convert import load_backbone

    backbone = load_backbone(checkpoint)
    out_dir = Path(out_root) / checkpoint_id(backbone)
    summary, todo = [], []
    for entry in suite.entries:
        result_path = out_dir / f"{entry.name}.json"
        if not force and is_finished(result_path):
            summary.append(_row(entry.name, read_result(result_path), note="already done"))
        else:
            todo.append(entry)
    if launcher == "local":
        for entry in todo:
            t0 = time.perf_counter()
            log.info("== %s (%s)", entry.name, entry.config_path)
            record = run_evaluation(backbone, entry.cfg, out_root=out_root, force=force, device=device,
                                    workers=workers)
            summary.append(_row(entry.name, record, seconds=time.perf_counter() - t0))
    elif launcher == "slurm":
        summary += _submit(checkpoint, todo, out_root, force, device, workers, dict(slurm or {}))
    else:
        raise ConfigError(f"unknown launcher {launcher!r} (local or slurm)")
    return summary


def _submit(checkpoint, entries, out_root, force, device, workers, slurm: dict) -> List[dict]:
    import submitit

    from moco_bench.core.launch import job_script_value

    folder = job_script_value("job folder", Path(slurm.pop("folder", Path(out_root) / "slurm_logs")).absolute(),
                              path=True)
    cluster = slurm.pop("cluster", None)
    params = {k: v if isinstance(v, (int, float)) else job_script_value(k, v) for k, v in slurm.items()}
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(**params)
    with executor.batch():
        jobs = [executor.submit(_run_one, str(checkpoint), str(e.config_path), e.overrides, str(out_root), force,
                                device, workers) for e in entries]
    rows = []
    for entry, job in zip(entries, jobs):
        log.info("submitted %s as job %s", entry.name, job.job_id)
        rows.append(_row(entry.name, job.result(), note=f"job {job.job_id}"))
    return rows


def _row(name: str, record: dict, seconds: float | None = None, note: str = "") -> dict:
    metrics = record.get("metrics", {})
    shown = ", ".join(f"{k} {v:.2f}" for k, v in list(metrics.items())[:4])
    reason = (record.get("error") or "").splitlines()[0] if record.get("error") else ""
    return {"evaluation": name, "status": record["status"], "metrics": shown, "reason": reason,
            "seconds": round(seconds, 1) if seconds is not None else None, "note": note}
