"""Schema of the semantic segmentation transfer: the detection transfer's (a detectron2 config, its overrides,
trials, datasets), with segmentation sources (``format: voc_seg | cityscapes_sem``)."""

from __future__ import annotations

from moco_bench.evaluators.detection.schema import DetectionEvaluation
from moco_bench.evaluators.schema import register_evaluator


def _semseg():
    from moco_bench.evaluators.segmentation.semseg import semseg_transfer

    return semseg_transfer


register_evaluator("detectron2_semseg", DetectionEvaluation, _semseg)
