"""DensePose transfer (MoCo v1 paper Table 6: DensePose R-CNN R50-FPN, s1x, COCO): the detection transfer's trials
with detectron2's DensePose project as the task (:mod:`.densepose_trainer`).

The DensePose project is part of detectron2's source (``projects/DensePose``) and is published on no package
registry this suite installs from; where ``densepose`` is not importable the evaluation is recorded ``skipped``
with the install route.
"""

from __future__ import annotations

from types import ModuleType
from typing import Dict

from omegaconf import DictConfig

from moco_bench.core.errors import MissingDependency
from moco_bench.evaluators.base import EvalContext, EvalOutput, needs
from moco_bench.evaluators.detection.detection import Task, require_detectron2, run_transfer, set_detection_classes

INSTALL_HINT = ("detectron2's DensePose project is not installed: it needs detectron2 built from its source "
                "(scripts/install_detectron2.py --source official), then `pip install "
                "'git+https://github.com/facebookresearch/detectron2@main#subdirectory=projects/DensePose'`")
PREFIX = {"bbox": "APbb", "densepose_gps": "APdp"}  # GPS-based DensePose AP: the paper's APdp (2019, before GPSm)


def require_densepose() -> None:
    try:
        import densepose  # noqa: F401
    except ImportError as e:
        raise MissingDependency(f"{INSTALL_HINT} ({e})") from None


def densepose_trainer() -> ModuleType:
    """The DensePose trainer module (imported on use: it imports the DensePose project)."""
    from moco_bench.evaluators.detection import densepose_trainer as module

    return module


def _metrics_of(results: dict) -> tuple[Dict[str, float], dict]:
    metrics, other = {}, {}
    for task, res in results.items():
        if task in PREFIX:
            metrics.update({PREFIX[task] + k[2:]: res[k] for k in ("AP", "AP50", "AP75") if res.get(k) is not None})
        other[task] = {k: v for k, v in res.items() if task not in PREFIX or k not in ("AP", "AP50", "AP75")}
    return metrics, {"other_metrics": other}


@needs(require_detectron2, require_densepose)
def densepose_transfer(backbone, cfg: DictConfig, ctx: EvalContext) -> EvalOutput:
    """Fine-tune DensePose R-CNN ``cfg.trials`` times (needs detectron2's DensePose project)."""
    return run_transfer(backbone, cfg, ctx, Task(densepose_trainer, set_detection_classes, _metrics_of))
