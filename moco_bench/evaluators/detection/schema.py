"""Schema of the detection transfer (detectron2 fine-tuning)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from moco_bench.core.schema import MISSING, field
from moco_bench.evaluators.schema import Evaluation, register_evaluator


@dataclass
class DetectionDatasets:
    classes: Optional[List[str]] = None  # VOC sources: class names in label order; COCO: from the JSON
    train: List[str] = MISSING
    test: List[str] = MISSING
    sources: Dict[str, Any] = MISSING  # name -> one entry of a format of moco_bench.data.registry (its schema)


@dataclass
class DetectionEvaluation(Evaluation):
    d2_config: str = MISSING  # detectron2 YAML, relative to the project root
    d2_overrides: Dict[str, Any] = field({})  # a detectron2 config tree, merged key by key
    trials: int = field(min=1)
    seed: int = MISSING
    save_model: bool = MISSING
    precision: str = field(choices=("fp32", "fp16"))  # detectron2 0.6's AMPTrainer autocasts to fp16 on CUDA only
    datasets: DetectionDatasets = MISSING


def _detectron2():
    from moco_bench.evaluators.detection.detection import detectron2_transfer

    return detectron2_transfer


def _densepose():
    from moco_bench.evaluators.detection.densepose import densepose_transfer

    return densepose_transfer


register_evaluator("detectron2", DetectionEvaluation, _detectron2)
register_evaluator("densepose", DetectionEvaluation, _densepose)
