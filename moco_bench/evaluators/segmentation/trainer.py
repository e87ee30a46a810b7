"""The detectron2 trainer of one semantic segmentation trial (a task of the detectron2 transfer runner, with
``new_config``, ``register`` and ``Trainer``; imports detectron2).

detectron2's ``SemanticSegmentor`` with the MoCo FCN head (:mod:`.head`), fed by :class:`SemSegMapper`: training
images are scaled by a random factor (``INPUT.RANDOM_SCALE``), padded to the crop where smaller (the pixel mean,
and the ignore label), randomly cropped to ``INPUT.CROP.SIZE`` and flipped (``INPUT.RANDOM_FLIP``); test images
keep their original size (``INPUT.MIN_SIZE_TEST`` 0). ``SemSegEvaluator`` gives mIoU.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import DatasetEvaluators, SemSegEvaluator
from PIL import Image

from moco_bench.evaluators.detection.trainer import ImageCount, TransferHooks
from moco_bench.evaluators.segmentation import datasets as seg_datasets
from moco_bench.evaluators.segmentation.head import add_head_config


def new_config():
    """detectron2's config with the head's keys and ``INPUT.RANDOM_SCALE`` (unset until a protocol sets them)."""
    cfg = get_cfg()
    add_head_config(cfg)
    cfg.INPUT.RANDOM_SCALE = None
    return cfg


def register(sources: dict, classes) -> None:
    seg_datasets.register_sources(sources, classes)


class RandomScale(T.Augmentation):
    """Resize by a factor drawn uniformly from ``[low, high]`` (DeepLab's random scaling)."""

    def __init__(self, low: float, high: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        s = np.random.uniform(self.low, self.high)
        return T.ResizeTransform(h, w, max(1, int(round(h * s))), max(1, int(round(w * s))))


class MeanPad(T.PadTransform):
    """detectron2's PadTransform with one value per image channel (the pixel mean)."""

    def apply_image(self, img):
        h, w = img.shape[:2]
        out = np.empty((h + self.y0 + self.y1, w + self.x0 + self.x1) + img.shape[2:], dtype=img.dtype)
        out[...] = np.asarray(self.pad_value).round().astype(img.dtype)
        out[self.y0:self.y0 + h, self.x0:self.x0 + w] = img
        return out


class PadAndCrop(T.Augmentation):
    """A random ``size`` crop; a smaller image is first padded at the bottom and right, with ``pixel_mean`` (zero
    after the model's normalization) and the ``ignore`` label, so every crop has the full size (DeepLab's
    pad-then-crop)."""

    def __init__(self, size, pixel_mean, ignore: int):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        ch, cw = self.size
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        y0, x0 = np.random.randint(0, h + ph - ch + 1), np.random.randint(0, w + pw - cw + 1)
        return T.TransformList([MeanPad(0, 0, pw, ph, w, h, pad_value=list(self.pixel_mean), seg_pad_value=self.ignore),
                                T.CropTransform(x0, y0, cw, ch, w + pw, h + ph)])


def train_augmentations(cfg) -> list:
    if cfg.INPUT.RANDOM_SCALE is None or not cfg.INPUT.CROP.ENABLED:
        raise ValueError("semantic segmentation training needs INPUT.RANDOM_SCALE and INPUT.CROP (the protocol's YAML)")
    augs = [RandomScale(*cfg.INPUT.RANDOM_SCALE),
            PadAndCrop(cfg.INPUT.CROP.SIZE, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)]
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(T.RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                                 vertical=cfg.INPUT.RANDOM_FLIP == "vertical"))
    return augs


class SemSegMapper:
    """Dataset record -> model input. detectron2's DatasetMapper reads label PNGs converted to luminance ("L"),
    which turns VOC's palette PNGs (SegmentationClass) into grey levels; this reads the stored indices."""

    def __init__(self, cfg, is_train: bool):
        self.format = cfg.INPUT.FORMAT
        self.is_train = is_train
        self.augs = T.AugmentationList(train_augmentations(cfg) if is_train else [])
        if not is_train and cfg.INPUT.MIN_SIZE_TEST != 0:
            raise ValueError("the protocol infers at the original image size: INPUT.MIN_SIZE_TEST must be 0")

    def __call__(self, record: dict) -> dict:
        record = copy.deepcopy(record)
        image = utils.read_image(record["file_name"], format=self.format)
        utils.check_image_size(record, image)
        label = np.asarray(Image.open(record.pop("sem_seg_file_name")), dtype=np.uint8) if self.is_train else None
        aug = T.AugInput(image, sem_seg=label)
        self.augs(aug)
        record["image"] = torch.as_tensor(np.ascontiguousarray(aug.image.transpose(2, 0, 1)))
        if self.is_train:
            record["sem_seg"] = torch.as_tensor(aug.sem_seg.astype(np.int64))
        return record


class Trainer(TransferHooks, DefaultTrainer):
    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=SemSegMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=SemSegMapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name):
        return DatasetEvaluators([SemSegEvaluator(dataset_name, distributed=True), ImageCount()])
