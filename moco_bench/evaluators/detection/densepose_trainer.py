"""The DensePose task of the detection transfer (``new_config``, ``register``, ``Trainer``): detectron2's DensePose
project used as its ``train_net.py`` does (``add_densepose_config``, its ``Trainer`` with the DensePose dataset
mapper and evaluators, its COCO dataset registration). Imports ``densepose``; not run where it is absent."""

from __future__ import annotations

from densepose import add_densepose_config
from densepose.data.datasets.coco import CocoDatasetInfo, register_dataset
from densepose.engine import Trainer as DensePoseTrainer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from moco_bench.evaluators.detection.trainer import TransferHooks


def new_config():
    cfg = get_cfg()
    add_densepose_config(cfg)
    return cfg


def register(sources: dict, classes) -> None:
    """Each source (``json``: DensePose-COCO annotations, ``image_root``) under its name, by DensePose's loader."""
    for name, spec in sources.items():
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_dataset(CocoDatasetInfo(name=name, images_root=str(spec["image_root"]),
                                         annotations_fpath=str(spec["json"])))


class Trainer(TransferHooks, DensePoseTrainer):
    pass
