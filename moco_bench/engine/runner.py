"""Run one evaluation: checkpoint + protocol config -> a result record in the store.

The runner owns everything around the measurement (loading and converting the checkpoint, the output
folder, the resolved config beside the output, the environment and timings, the failure record); the
evaluator only measures.
"""

from __future__ import annotations

import logging
import shutil
import traceback
from pathlib import Path
from typing import Iterable, Optional

from omegaconf import DictConfig

from moco_bench.core import paths
from moco_bench.core.config import resolved, save_config
from moco_bench.core.distributed import process_rank
from moco_bench.core.env import environment
from moco_bench.core.errors import ConfigError, DatasetNotFound, MissingDependency, ResultExistsError, describe
from moco_bench.core.locks import exclusive
from moco_bench.data.check import check_data
from moco_bench.engine import comparability
from moco_bench.engine.fit import misfits
from moco_bench.evaluators.base import EvalContext
from moco_bench.evaluators.catalog import get as get_evaluator
from moco_bench.evaluators.catalog import load_evaluation, spec
from moco_bench.results.examples import save_examples, sidecar
from moco_bench.results.schema import make_record, now
from moco_bench.results.store import check_label, checkpoint_label, default_label, is_finished, write_result

log = logging.getLogger(__name__)
SKIP_ERRORS = (DatasetNotFound, MissingDependency)
INFO_KEYS = ("variant",)  # record fields an evaluator's info may refine; comparability is the runner's alone


def checkpoint_id(backbone) -> str:
    """Folder name of a checkpoint's results (see :func:`checkpoint_label`)."""
    return checkpoint_label(backbone.path, backbone.sha256)


def check_config(cfg: DictConfig) -> dict:
    """Fail before any work when the config names an unknown evaluator or no shipped protocol; returns the
    config's comparability assessment (moco_bench/engine/comparability.py). The config was checked against its
    schema when it was loaded (:func:`load_evaluation`)."""
    spec(str(cfg.evaluator))
    return comparability.assess(cfg)


def run_evaluation(
    backbone,
    cfg: DictConfig,
    out_root: Path | str = "results/runs",
    force: bool = False,
    device: str = "cpu",
    workers: int = 2,
    label: Optional[str] = None,
) -> dict:
    """Evaluate ``backbone`` (a converted checkpoint) under ``cfg`` and write the record.

    A finished result is kept unless ``force`` (``ResultExistsError``); with ``force`` the evaluation's work
    folder (training checkpoints an interrupted run would resume from) is cleared so it really recomputes.
    The evaluation holds a lock in its results folder: a second process asking for the same evaluation gets
    :class:`Busy` and does nothing, and "finished" is checked again under the lock. An evaluation whose
    dataset or optional library is missing is recorded as ``skipped``; any other exception as ``failed`` with
    its traceback. Under torchrun only rank 0 locks and writes. The record is returned either way; callers
    decide what a failure means for them. ``label`` names the checkpoint in tables and plots (``--label``; by
    default :func:`default_label` of its path); the evaluator's per-example outputs go beside the record.
    """
    assessment = check_config(cfg)
    label = check_label(label) if label is not None else default_label(backbone.path)
    problems = misfits(backbone, cfg)
    if problems:
        raise ConfigError(f"{cfg.get('_source_') or cfg.name}: {backbone.path} does not fit: " + "; ".join(problems))
    out_dir = Path(out_root) / checkpoint_id(backbone)
    result_path = out_dir / f"{cfg.name}.json"
    main_rank = process_rank() == 0
    with exclusive(out_dir / f".{cfg.name}.lock", f"evaluation {cfg.name} of {out_dir.name}", enabled=main_rank):
        if not force and is_finished(result_path):
            raise ResultExistsError(f"{result_path}: a finished result is already there (use --force to replace it)",
                                    path=result_path)
        work_dir = out_dir / cfg.name
        if force and main_rank and work_dir.is_dir():
            shutil.rmtree(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        if main_rank:
            save_config(cfg, work_dir / "config.yaml")
        record, examples = _measure(backbone, cfg, assessment, work_dir, device, workers, label)
        if main_rank:
            _keep_examples(result_path, record, examples)
            write_result(result_path, record, force=True)
    return record


def result_path(out_root: Path | str, record: dict) -> Path:
    """Where :func:`run_evaluation` writes ``record``."""
    return Path(out_root) / checkpoint_label(record["checkpoint"]["path"], record["checkpoint"]["sha256"]) / \
        f"{record['evaluation']['name']}.json"


def _keep_examples(result_path: Path, record: dict, examples: Optional[dict]) -> None:
    """The per-example outputs beside the record (moco_bench/results/examples.py), named in it; an earlier run's
    file is removed when this one has none. Outputs that cannot be kept cost the report its intervals, not the
    result."""
    path = sidecar(result_path)
    if not examples or record["status"] != "ok":
        path.unlink(missing_ok=True)
        return
    try:
        record["examples"] = save_examples(path, examples)
    except (ValueError, KeyError) as e:
        log.warning("%s: per-example outputs not kept (%s); the report gives this result no interval", path, e)
        path.unlink(missing_ok=True)


def _measure(backbone, cfg: DictConfig, assessment: dict, work_dir: Path, device: str, workers: int,
             label: str) -> tuple:
    """Check the datasets, run the evaluator and build the record (its numbers, or why there are none) and its
    per-example outputs."""
    ctx = EvalContext(out_dir=work_dir, cache_dir=paths.data_cache() / "features", device=device, workers=workers)
    evaluation = {"name": cfg.name, "protocol": cfg.evaluator, "config": resolved(cfg),
                  "benchmark": cfg.get("benchmark", cfg.name), "variant": cfg.get("variant", "")}
    start, status, error, output = now(), "ok", None, None
    try:
        evaluator = get_evaluator(str(cfg.evaluator))
        for check in getattr(evaluator, "needs", ()):
            check()
        with ctx.stage("data_check"):
            ctx.data_check = check_data(evaluation["config"], str(cfg.get("_source_") or cfg.name))
        evaluation["data_check"] = ctx.data_check
        assessment = comparability.settle(assessment, ctx.data_check, cfg)
        _assessed(evaluation, assessment)
        output = evaluator(backbone, cfg, ctx)
        evaluation.update({k: v for k, v in output.info.items() if k not in evaluation or k in INFO_KEYS})
    except SKIP_ERRORS as e:
        status, error = "skipped", describe(e)
    except Exception as e:  # noqa: BLE001 - any failure becomes a failed record; the traceback is kept
        status, error = "failed", f"{type(e).__name__}: {describe(e)}\n{traceback.format_exc()}"
        log.error("%s failed: %s", cfg.name, describe(e))
    if "comparable" not in evaluation:  # the data check failed: the config's own assessment
        _assessed(evaluation, assessment)
    record = make_record(
        evaluation=evaluation, checkpoint={**backbone.record(), "label": label},
        metrics=output.metrics if output else {},
        per_seed=output.per_seed if output else None, details=output.details if output else None,
        environment=environment(device=device), timing={"start": start, "end": now(), "seconds": dict(ctx.seconds)},
        status=status, error=error)
    return record, output.examples if output else None


def _assessed(evaluation: dict, assessment: dict) -> None:
    note = comparability.describe(assessment)
    log.info("%s: %s", evaluation["name"], note)
    evaluation.update({"comparable": assessment["comparable"], "comparability": assessment,
                       "comparability_note": note, "published_protocol": assessment["published_protocol"]})


def evaluate_checkpoint(ckpt: str, config: str, overrides: Optional[Iterable[str]] = None,
                        weights: Optional[str] = None, **kwargs) -> dict:
    """Load ``ckpt`` (its copy ``weights``) with the converter, then :func:`run_evaluation` under ``config`` +
    ``overrides``."""
    from moco_bench.convert import load_backbone

    cfg = load_evaluation(paths.config_file(config, "evaluate"), overrides)
    check_config(cfg)
    return run_evaluation(load_backbone(ckpt, weights=weights), cfg, **kwargs)
