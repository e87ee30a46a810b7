"""Schema of the detection transfer (detectron2 fine-tuning)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from moco_bench.core.schema import MISSING, field
from moco_bench.evaluators.schema import Evaluation, register_schema


@dataclass
class DetectionDatasets:
    classes: Optional[List[str]] = None  # VOC sources: class names in label order; COCO: from the JSON
    train: List[str] = MISSING
    test: List[str] = MISSING
    sources: Dict[str, Any] = MISSING  # name -> {format: voc|coco, ...}


@dataclass
class DetectionEvaluation(Evaluation):
    d2_config: str = MISSING  # detectron2 YAML, relative to the project root
    d2_overrides: Dict[str, Any] = field({})  # a detectron2 config tree, merged key by key
    trials: int = field(min=1)
    seed: int = MISSING
    save_model: bool = MISSING
    precision: str = field(choices=("fp32", "fp16"))  # detectron2 0.6's AMPTrainer autocasts to fp16 on CUDA only
    datasets: DetectionDatasets = MISSING


register_schema("detectron2", DetectionEvaluation, "moco_bench.evaluators.detection.detection")
register_schema("densepose", DetectionEvaluation, "moco_bench.evaluators.detection.densepose")
