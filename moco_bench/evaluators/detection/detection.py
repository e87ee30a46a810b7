"""Detection transfer with detectron2: fine-tune Faster / Mask / keypoint R-CNN from a converted backbone.

MoCo's protocol (moco ``detection/``; mmselfsup ``configs/benchmarks/detectron2``): the backbone is written as
a detectron2 ``.pkl`` with matching heuristics, every BN layer is trained (``FREEZE_AT 0`` and a synchronized
norm), and the detector is fine-tuned end to end and evaluated on VOC07 test (VOC AP at IoU .50:.05:.95, AP50,
AP75), COCO val (box, mask, keypoint AP), LVIS val (the lvis API) or Cityscapes val (the official instance
evaluation). VOC results are the mean of 5 trials, as published. The trial machinery below also runs the
other detectron2 tasks (:class:`Task`: semantic segmentation, DensePose).

One evaluation config names a detectron2 config (``evaluate/detectron2/*.yaml``, written from the protocol),
extra detectron2 options (``d2_overrides``, a detectron2 config tree), the datasets, the number of trials and
the GPUs it asks for (``resources.gpus``). Each trial is a
detectron2 ``DefaultTrainer`` run under ``detectron2.engine.launch`` (one process per GPU; on CPU one
process) in ``<out>/trial<k>``, which keeps its log, metrics and detectron2 config. Post-conditions: every
pretrained backbone tensor is found, unchanged, in the model before training (else CheckpointError); a
NaN/inf loss stops the evaluation (TrainingDiverged naming the kept log); every test image is evaluated.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import statistics
import warnings
from pathlib import Path
from types import ModuleType
from typing import Callable, Dict, List, NamedTuple

import numpy as np
from omegaconf import DictConfig

from moco_bench.convert import write_detectron2
from moco_bench.core.atomic import atomic_write_text
from moco_bench.core.config import resolved, source_of
from moco_bench.core.env import strict_fp32
from moco_bench.core.errors import ConfigError, MissingDependency, TrainingDiverged
from moco_bench.core.paths import project_file
from moco_bench.data.check import check_sources
from moco_bench.evaluators.base import EvalContext, EvalOutput, needs
from moco_bench.evaluators.detection.d2config import d2_opts, merge_d2_file
from moco_bench.evaluators.detection.trial_log import log_to

log = logging.getLogger(__name__)
INSTALL_HINT = ("detectron2 is not installed; install it with `.venv/bin/python scripts/install_detectron2.py` "
                "(run by `make setup`; README, section 'detectron2')")
COCO_PREFIX = {"bbox": "APbb", "segm": "APmk", "keypoints": "APkp"}  # results/published/numbers.csv names
TRIAL_RESULT = "trial_result.json"
DIVERGED = "diverged.json"


class Task(NamedTuple):
    """One kind of detectron2 fine-tuning the trials below run.

    ``trainer()`` imports and returns the task's trainer module (in every trial process: a module-level function,
    so it pickles by name), which provides ``new_config()`` (detectron2's config with the task's keys),
    ``register(sources, classes)`` (its datasets in detectron2's catalogs) and ``Trainer`` (a detectron2 trainer
    with :class:`~moco_bench.evaluators.detection.trainer.TransferHooks`). ``configure(d2, cfg, sources)`` sets
    what the training set decides (class counts); ``metrics_of(results)`` gives (metrics, per-category, other
    numbers) of a trial.
    """

    trainer: Callable[[], ModuleType]
    configure: Callable
    metrics_of: Callable


def detection_trainer() -> ModuleType:
    """The detectron2 trainer module (imported on use: it imports detectron2)."""
    from moco_bench.evaluators.detection import trainer

    return trainer


def detection_task() -> Task:
    return Task(detection_trainer, set_detection_classes, _metrics_of)


def require_detectron2() -> None:
    """Raise :class:`MissingDependency` (the runner records ``skipped``) with the install hint."""
    try:
        with warnings.catch_warnings():  # fvcore.nn and detectron2.modeling script functions at import
            warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
            import detectron2.layers  # noqa: F401
            import detectron2.modeling  # noqa: F401
    except ImportError as e:
        raise MissingDependency(f"{INSTALL_HINT} ({e})") from None



def protocol_d2_config(cfg: DictConfig, arch: str, task: Task | None = None):
    """The detectron2 config a protocol asks for on ``arch``: its YAML (and every ``_BASE_``), the backbone's shape
    and stem, then ``d2_overrides``; nothing the run decides (datasets, classes, weights, device) yet."""
    from moco_bench.evaluators.detection import model as d2_model
    from moco_bench.evaluators.detection.backbones import backbone_name

    task = task or detection_task()
    path = project_file(str(cfg.d2_config))
    if not path.is_file():
        raise ConfigError(f"{source_of(cfg)}: d2_config {cfg.d2_config} not found")
    d2 = task.trainer().new_config()
    merge_d2_file(d2, path, source_of(cfg))
    d2.merge_from_list(d2_model.resnet_options(arch))
    try:
        d2.merge_from_list(d2_opts(cfg.d2_overrides))
    except (KeyError, ValueError, AssertionError) as e:
        raise ConfigError(f"{source_of(cfg)}: bad d2_overrides: {e}") from None
    d2.merge_from_list(["MODEL.BACKBONE.NAME", backbone_name(arch, d2.MODEL.BACKBONE.NAME)])  # the stem
    return d2


def build_d2_config(backbone, cfg: DictConfig, out_dir: Path, weights: Path, device: str, world_size: int,
                    task: Task | None = None):
    """The detectron2 config of a run: :func:`protocol_d2_config`, then what the run decides (datasets, class
    counts, weights, output, device), with SyncBN made usable."""
    from moco_bench.evaluators.detection import model as d2_model
    from moco_bench.evaluators.detection.backbones import check_fpn_levels

    task = task or detection_task()
    d2 = protocol_d2_config(cfg, backbone.arch, task)
    ds = cfg.datasets
    d2.merge_from_list([
        "DATASETS.TRAIN", tuple(str(n) for n in ds.train), "DATASETS.TEST", tuple(str(n) for n in ds.test),
        "MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(out_dir), "MODEL.DEVICE", "cpu" if device == "cpu" else "cuda",
        "SOLVER.AMP.ENABLED", cfg.precision == "fp16",
    ])
    task.configure(d2, cfg, resolved(ds)["sources"])
    check_fpn_levels(d2, backbone.arch, source_of(cfg))
    norms = d2_model.usable_norms(d2, world_size, device)
    return d2, norms


def set_detection_classes(d2, cfg: DictConfig, sources: dict) -> None:
    """Box/mask classes and keypoints of the training set."""
    from moco_bench.evaluators.detection import datasets as d2_datasets

    ds = cfg.datasets
    num_classes, num_keypoints = d2_datasets.dataset_shape(sources[str(ds.train[0])], ds.get("classes"))
    d2.merge_from_list(["MODEL.ROI_HEADS.NUM_CLASSES", num_classes])
    if d2.MODEL.KEYPOINT_ON:
        if not num_keypoints:
            raise ConfigError(f"{source_of(cfg)}: a keypoint model needs a training set with keypoints "
                              f"(datasets.sources.{ds.train[0]}.keypoints)")
        d2.merge_from_list(["MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", num_keypoints])


def _finite(tree):
    """Nested results with numpy scalars as floats and NaN (COCO: a class without ground truth) as None."""
    if isinstance(tree, dict):
        return {str(k): _finite(v) for k, v in tree.items()}
    v = float(tree)
    return v if math.isfinite(v) else None


def _trial_worker(job: dict) -> None:
    """One trial in one process (rank): register datasets, train, evaluate; rank 0 writes ``trial_result.json``.

    Runs under ``detectron2.engine.launch``, so it is a module-level function taking plain data.
    """
    from detectron2.data import DatasetCatalog
    from detectron2.utils import comm
    from detectron2.utils.env import seed_all_rng

    from moco_bench.convert import read_detectron2_pkl
    from moco_bench.evaluators.detection import backbones  # noqa: F401 - a spawned rank registers them too
    from moco_bench.evaluators.detection import model as d2_model

    out = Path(job["out_dir"])
    strict_fp32()  # a fresh process under detectron2's launch
    task = job["trainer"]()
    task.register(job["sources"], job["classes"])
    cfg = task.new_config()
    merge_d2_file(cfg, out / "d2_config.yaml", str(out))
    cfg.freeze()
    seed_all_rng(cfg.SEED + comm.get_rank())
    log_file = out / ("log.txt" if comm.is_main_process() else f"log_rank{comm.get_rank()}.txt")
    with log_to(log_file):
        trainer = task.Trainer(cfg, save_model=job["save_model"])
        trainer.resume_or_load(resume=False)
        weights = read_detectron2_pkl(cfg.MODEL.WEIGHTS)["model"]
        model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
        loaded = d2_model.check_backbone_loaded(model, weights, job["checkpoint"])
        try:
            trainer.train()
        except FloatingPointError as e:
            if comm.is_main_process():
                atomic_write_text(out / DIVERGED, json.dumps({"error": str(e), "iteration": trainer.iter}))
            raise
    if comm.is_main_process():
        times = trainer.iteration_seconds
        result = {
            "seed": cfg.SEED, "results": _finite(trainer.last_results), "weights": loaded,
            "seconds_per_iter": statistics.median(times[1:] if len(times) > 1 else times) if times else None,
            "iterations": len(times),
            "test_images": {n: len(DatasetCatalog.get(n)) for n in cfg.DATASETS.TEST},
        }
        atomic_write_text(out / TRIAL_RESULT, json.dumps(result, indent=1))


@contextlib.contextmanager
def _caller_rng_kept():
    """A one-process trial runs here and seeds every RNG (detectron2's seed_all_rng): give the caller its
    random, numpy and torch states and PYTHONHASHSEED back afterwards."""
    import torch

    state, hash_seed = (random.getstate(), np.random.get_state()), os.environ.get("PYTHONHASHSEED")
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(state[0])
            np.random.set_state(state[1])
            if hash_seed is None:
                os.environ.pop("PYTHONHASHSEED", None)
            else:
                os.environ["PYTHONHASHSEED"] = hash_seed


def _run_trial(job: dict, world_size: int) -> dict:
    from detectron2.engine import launch

    out = Path(job["out_dir"])
    try:
        with _caller_rng_kept():
            launch(_trial_worker, world_size, dist_url="auto", args=(job,))
    except Exception:
        if (out / DIVERGED).is_file():
            info = json.loads((out / DIVERGED).read_text())
            raise TrainingDiverged(f"{out}: training diverged at iteration {info['iteration']} ({info['error']}); "
                                   f"the log is kept in {out / 'log.txt'}") from None
        raise
    return json.loads((out / TRIAL_RESULT).read_text())


def _metrics_of(results: dict) -> tuple[Dict[str, float], dict]:
    """Reported metrics and the details (per-category AP, remaining numbers) of one trial's detectron2 results.

    COCO and LVIS: AP, AP50, AP75 per task; LVIS also its rare/common/frequent APs (``APmkr`` ...); the
    official Cityscapes evaluation gives AP and AP50. An LVIS AP that is undefined (-1: no ground truth of that
    group) is left out of the metrics.
    """
    metrics, per_category, extra = {}, {}, {}
    if "bbox_per_class_AP50" in results:  # VOC (moco_bench VOC evaluator)
        metrics = {k: results["bbox"][k] for k in ("AP", "AP50", "AP75")}
        per_category["AP50"] = results["bbox_per_class_AP50"]
    for task, prefix in COCO_PREFIX.items():
        if task not in results or "bbox_per_class_AP50" in results:
            continue
        res = results[task]
        for name in ("AP", "AP50", "AP75", "APr", "APc", "APf"):
            if name in res and (res[name] is None or res[name] >= 0):
                # detectron2 gives NaN when there was no prediction at all; COCOeval would score that 0
                metrics[prefix + name[2:]] = res[name] if res[name] is not None else 0.0
        per_category[task] = {k[3:]: v for k, v in res.items() if k.startswith("AP-")}
        extra[task] = {k: v for k, v in res.items() if not k.startswith("AP-") and prefix + k[2:] not in metrics}
    return metrics, {"per_category_AP": per_category, "other_metrics": extra}


@needs(require_detectron2)
def detectron2_transfer(backbone, cfg: DictConfig, ctx: EvalContext) -> EvalOutput:
    """Fine-tune and evaluate ``cfg.trials`` times; metrics are trial means (``<metric>_std``: population std)."""
    return run_transfer(backbone, cfg, ctx, detection_task())


def _checked_sources(cfg: DictConfig, task: Task, ctx: EvalContext):
    """Everything checked before any compute: the datasets (names, files, counts, classes with ground truth; the
    runner's check where it ran) and the precision against the device. Returns the sources and their summary."""
    if cfg.precision == "fp16" and ctx.device == "cpu":
        raise ConfigError(f"{source_of(cfg)}: precision fp16 is detectron2's AMP training, which needs a CUDA device")
    ds = cfg.datasets
    names = [str(n) for n in list(ds.train) + list(ds.test)]
    sources = resolved(ds)["sources"]
    unknown = [n for n in names if n not in sources]
    if unknown:
        raise ConfigError(f"{source_of(cfg)}: datasets.train/test name {unknown}, not described in datasets.sources")
    if len(ds.test) != 1:
        raise ConfigError(f"{source_of(cfg)}: datasets.test must name exactly one dataset (got {list(ds.test)})")
    sources = {n: sources[n] for n in names}
    classes = list(ds.classes) if ds.get("classes") else None
    if ctx.data_check is not None:
        return sources, ctx.data_check
    return sources, check_sources(sources, [str(n) for n in ds.test], classes, source_of(cfg))


def _world_size(cfg: DictConfig, device: str) -> int:
    if device == "cpu":
        return 1
    import torch

    world_size = int(cfg.resources.gpus)
    if world_size > torch.cuda.device_count():
        raise ConfigError(f"{source_of(cfg)}: resources.gpus {world_size} but {torch.cuda.device_count()} CUDA "
                          "devices are visible")
    return world_size


def run_transfer(backbone, cfg: DictConfig, ctx: EvalContext, task: Task) -> EvalOutput:
    """``cfg.trials`` trials of ``task``, each fine-tuning from the converted backbone in ``<out>/trial<k>``."""
    sources, summary = _checked_sources(cfg, task, ctx)
    world_size = _world_size(cfg, ctx.device)
    trials, seed, ds = int(cfg.trials), int(cfg.seed), cfg.datasets
    with ctx.stage("convert"):
        weights = write_detectron2(backbone, ctx.out_dir / "backbone_d2.pkl")

    runs = []
    for k in range(trials):
        out = ctx.out_dir / f"trial{k}"
        if out.exists():  # a fresh trial: detectron2 appends to metrics.json and event files
            shutil.rmtree(out)
        out.mkdir(parents=True)
        d2, norms = build_d2_config(backbone, cfg, out, weights, ctx.device, world_size, task)
        d2.merge_from_list(["SEED", seed + k, "DATALOADER.NUM_WORKERS", ctx.workers])
        atomic_write_text(out / "d2_config.yaml", d2.dump())
        job = {"out_dir": str(out), "sources": sources, "classes": list(ds.classes) if ds.get("classes") else None,
               "save_model": bool(cfg.save_model), "checkpoint": str(backbone.path), "trainer": task.trainer}
        log.info("%s: trial %d/%d (seed %d) in %s", cfg.name, k + 1, trials, seed + k, out)
        with ctx.stage("train_and_test"):
            runs.append(_run_trial(job, world_size))
    out = _summarize(runs, cfg, norms, world_size, task)
    out.details["datasets"] = summary  # image counts; COCO annotations that name no image (dropped)
    out.info["precision"] = str(cfg.precision)
    return out


def _mean_tree(trees: List[dict]):
    """Element-wise mean of equally shaped nested dicts; None (undefined: a class without ground truth) stays None."""
    if isinstance(trees[0], dict):
        return {k: _mean_tree([t[k] for t in trees]) for k in trees[0]}
    values = [v for v in trees if v is not None]
    return float(np.mean(values)) if values else None


def _summarize(runs: List[dict], cfg: DictConfig, norms: dict, world_size: int, task: Task) -> EvalOutput:
    per_trial = [task.metrics_of(r["results"]) for r in runs]
    names = [m for m in per_trial[0][0] if all(m in t[0] for t in per_trial)]
    per_seed = {m: [t[0][m] for t in per_trial] for m in names}
    metrics = {m: float(np.mean(v)) for m, v in per_seed.items()}
    if len(runs) > 1:
        metrics.update({f"{m}_std": float(np.std(v)) for m, v in per_seed.items()})
    evaluated = [r["results"].get("images", {}).get("evaluated") for r in runs]
    test_name = str(cfg.datasets.test[0])
    backbone_norm = norms.get("MODEL.RESNETS.NORM", {"config": "?", "used": "?"})
    swapped = {k: v for k, v in norms.items() if v["config"] != v["used"]}
    variant = f"norm {backbone_norm['config']}"
    if swapped:
        variant += " (run as " + ", ".join(sorted({f"{v['used']}" for v in swapped.values()})) + \
                   f": {world_size} process{'es' if world_size > 1 else ''})"
    if cfg.get("variant"):
        variant = f"{cfg.variant}; {variant}"
    details = {
        "norm": norms,
        **_mean_tree([t[1] for t in per_trial]),  # per-category numbers: trial means, as the metrics
        "seconds_per_iter": [r["seconds_per_iter"] for r in runs],
        "iterations": [r["iterations"] for r in runs],
        "images_evaluated": evaluated,
        "test_images": runs[0]["test_images"][test_name],
        "weights_loaded": runs[0]["weights"],
        "d2_config": str(cfg.d2_config),
        "seeds": [r["seed"] for r in runs],
    }
    info = {"dataset": "+".join(str(n) for n in cfg.datasets.train), "split": test_name,
            "seeds": details["seeds"], "variant": variant,
            "norm": backbone_norm["used"], "world_size": world_size, "trials": len(runs)}
    return EvalOutput(metrics=metrics, per_seed=per_seed if len(runs) > 1 else {}, details=details, info=info)
