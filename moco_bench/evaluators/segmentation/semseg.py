"""Semantic segmentation transfer (MoCo v1 appendix): fine-tune an FCN-16s on a converted R50 and report mIoU.

The R50's res5 has dilation 2 and stride 1 (output stride 16); the head (:mod:`.head`) adds two dilated 3x3
conv-BN-ReLU layers and a 1x1 classifier; training scales, crops and flips (:mod:`.trainer`); inference runs at the
original size; the metric is detectron2's SemSegEvaluator mIoU, the mean over ``trials`` runs. Trials, their
processes, the backbone check and the record are the detectron2 transfer's (:func:`run_transfer`): one
evaluation config names a detectron2 config (``evaluate/detectron2/*_fcn16_*.yaml``) and its datasets.
"""

from __future__ import annotations

from types import ModuleType
from typing import Dict

from omegaconf import DictConfig

from moco_bench.core.config import source_of
from moco_bench.core.errors import ConfigError
from moco_bench.evaluators.base import EvalContext, EvalOutput, needs
from moco_bench.evaluators.detection.detection import Task, require_detectron2, run_transfer


def _configure(d2, cfg: DictConfig, sources: dict) -> None:
    """Class count and ignore label of the training set (its test set must agree)."""
    from moco_bench.evaluators.segmentation import datasets as seg_datasets

    ds = cfg.datasets
    train, test = sources[str(ds.train[0])], sources[str(ds.test[0])]
    classes = seg_datasets.class_names(train, ds.get("classes"))
    if seg_datasets.class_names(test, ds.get("classes")) != classes or train.get("ignore_label") != test.get(
            "ignore_label"):
        raise ConfigError(f"{source_of(cfg)}: the training and test sets differ in classes or "
                          "ignore_label")
    d2.merge_from_list(["MODEL.SEM_SEG_HEAD.NUM_CLASSES", len(classes),
                        "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", int(train["ignore_label"])])


def _metrics_of(results: dict) -> tuple[Dict[str, float], dict]:
    """mIoU, and per-class IoU and the other pixel metrics (fwIoU, mACC, pACC, per-class accuracy) as details."""
    res = results["sem_seg"]
    per_class = {k[4:]: v for k, v in res.items() if k.startswith("IoU-")}
    other = {k: v for k, v in res.items() if not k.startswith("IoU-") and k != "mIoU"}
    return {"mIoU": res["mIoU"]}, {"per_class_IoU": per_class, "other_metrics": other}


def semseg_trainer() -> ModuleType:
    """The FCN trainer module (imported on use: it imports detectron2)."""
    from moco_bench.evaluators.segmentation import trainer

    return trainer


def semseg_task() -> Task:
    return Task(semseg_trainer, _configure, _metrics_of)


@needs(require_detectron2)
def semseg_transfer(backbone, cfg: DictConfig, ctx: EvalContext) -> EvalOutput:
    """Fine-tune and evaluate ``cfg.trials`` times; ``mIoU`` is the trial mean (``mIoU_std``: population std)."""
    return run_transfer(backbone, cfg, ctx, semseg_task())
