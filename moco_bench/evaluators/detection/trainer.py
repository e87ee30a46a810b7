"""The detectron2 trainer of one detection-transfer trial and its evaluators (imports detectron2).

``Trainer`` is detectron2's ``DefaultTrainer`` (schedule, PreciseBN, final evaluation, logging) with the evaluator
chosen from the test set's type (VOC; COCO with pycocotools' COCOeval, since the C++ one may be absent; LVIS with
the ``lvis`` API; Cityscapes with its official instance evaluation) and :class:`TransferHooks`: a timer of each
training step and the final checkpoint left out unless asked for.

This module is a trial *task* of :mod:`moco_bench.evaluators.detection.detection`: it provides ``new_config``
(detectron2's config), ``register`` (the datasets) and ``Trainer``; the semantic segmentation and DensePose
tasks provide the same three.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import defaultdict
from itertools import chain

from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, HookBase, hooks
from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    COCOEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    LVISEvaluator,
    PascalVOCDetectionEvaluator,
)
from detectron2.evaluation.pascal_voc_evaluation import voc_eval
from detectron2.utils import comm

from moco_bench.evaluators.detection.datasets import register_sources
from moco_bench.evaluators.detection.dilated_c5 import add_dilated_c5_config


def new_config():
    """detectron2's default config with the one key detection adds (the dilated-C5 backbone's width)."""
    cfg = get_cfg()
    add_dilated_c5_config(cfg)
    return cfg


def register(sources: dict, classes) -> None:
    register_sources(sources, classes)


class VOCEvaluator(PascalVOCDetectionEvaluator):
    """detectron2's VOC evaluator (AP over IoU .50:.05:.95, AP50, AP75) plus the per-class AP50 it computes
    internally but does not return (``bbox_per_class_AP50``)."""

    def evaluate(self):
        gathered = comm.gather(self._predictions, dst=0)
        merged = defaultdict(list)
        if comm.is_main_process():
            for per_rank in gathered:
                for cls_id, lines in per_rank.items():
                    merged[cls_id].extend(lines)
        # The parent gathers again: rank 0 now holds everything and the others nothing, so nothing is doubled.
        self._predictions = merged
        ret = super().evaluate()
        if not comm.is_main_process():
            return ret
        per_class = {}
        with tempfile.TemporaryDirectory(prefix="moco_bench_voc_") as tmp:
            template = os.path.join(tmp, "{}.txt")
            for cls_id, name in enumerate(self._class_names):
                with open(template.format(name), "w") as f:
                    f.write("\n".join(merged.get(cls_id, [])))
                _, _, ap = voc_eval(template, self._anno_file_template, self._image_set_path, name, ovthresh=0.5,
                                    use_07_metric=self._is_2007)
                per_class[name] = ap * 100
        ret["bbox_per_class_AP50"] = per_class
        return ret


class CityscapesEvaluator(CityscapesInstanceEvaluator):
    """The official Cityscapes instance evaluation, run inside ``out_dir``: cityscapesscripts writes its
    ``matches.json`` into the working directory."""

    def __init__(self, dataset_name: str, out_dir: str):
        super().__init__(dataset_name)
        self._out_dir = out_dir

    def evaluate(self):
        cwd = os.getcwd()
        os.makedirs(self._out_dir, exist_ok=True)
        os.chdir(self._out_dir)
        try:
            return super().evaluate()
        finally:
            os.chdir(cwd)


class ImageCount(DatasetEvaluator):
    """How many distinct test images reached the evaluators (a post-condition: all of them)."""

    def reset(self):
        self._ids = []

    def process(self, inputs, outputs):
        self._ids.extend(x.get("image_id", x["file_name"]) for x in inputs)  # semantic segmentation: no ids

    def evaluate(self):
        ids = comm.gather(self._ids, dst=0)
        if not comm.is_main_process():
            return {}
        return {"images": {"evaluated": float(len(set(chain.from_iterable(ids))))}}


class StepTimer(HookBase):
    """Seconds of each training step (forward, backward, update); registered first so no other hook's work
    (evaluation, PreciseBN, writers) is counted."""

    def __init__(self):
        self.seconds = []

    def before_step(self):
        self._start = time.perf_counter()

    def after_step(self):
        self.seconds.append(time.perf_counter() - self._start)


class TransferHooks:
    """What a transfer trial adds to a detectron2 trainer (put it before the trainer class in the bases): a timer
    of each training step, registered first so no other hook's work is counted, and no periodic checkpoint
    unless ``save_model``."""

    def __init__(self, cfg, save_model: bool = False):
        self._save_model = save_model
        self._timer = StepTimer()
        super().__init__(cfg)

    def build_hooks(self):
        default = super().build_hooks()
        if not self._save_model:
            default = [h for h in default if not isinstance(h, hooks.PeriodicCheckpointer)]
        return [self._timer] + default

    @property
    def iteration_seconds(self):
        return list(self._timer.seconds)

    @property
    def last_results(self) -> dict:
        """The evaluation after the last iteration (detectron2's EvalHook runs it; rank 0 holds the numbers)."""
        return self._last_eval_results


class Trainer(TransferHooks, DefaultTrainer):
    @classmethod
    def build_evaluator(cls, cfg, dataset_name):
        kind = MetadataCatalog.get(dataset_name).evaluator_type
        out = os.path.join(cfg.OUTPUT_DIR, "inference")
        tasks = ("bbox",) + (("segm",) if cfg.MODEL.MASK_ON else ()) + (("keypoints",) if cfg.MODEL.KEYPOINT_ON else ())
        if kind == "pascal_voc":
            main = VOCEvaluator(dataset_name)
        elif kind == "lvis":
            main = LVISEvaluator(dataset_name, tasks=tasks, output_dir=out,
                                 max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE)
        elif kind == "cityscapes_instance":
            main = CityscapesEvaluator(dataset_name, out)
        else:
            main = COCOEvaluator(dataset_name, tasks=tasks, output_dir=out, use_fast_impl=False,
                                 kpt_oks_sigmas=cfg.TEST.KEYPOINT_OKS_SIGMAS)
        return DatasetEvaluators([main, ImageCount()])
