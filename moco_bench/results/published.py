"""Published numbers (``results/published/numbers.csv``) and the layer each figure was measured on."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from moco_bench.core.errors import DataError
from moco_bench.core.paths import project_root

DEFAULT_CSV = project_root() / "results" / "published" / "numbers.csv"  # the checkout's, or the copy a wheel ships
COLUMNS = ("method", "pretrain_data", "epochs", "arch", "benchmark", "protocol", "metric", "value", "spread", "source",
           "note")
_FEATURE = re.compile(r"feature[1-5]")
# The dataset each benchmark's published figures were measured on, named as our records name it when a run reads
# that dataset (the protocol file's data.name, or its detectron2 training sets joined by "+"): a number of ours
# on other data is never drawn on the same axes as these (tests/test_report.py checks the names against the
# shipped protocol files).
PUBLISHED_DATASETS = {
    "imagenet_linear": "ImageNet", "imagenet_mhead_linear": "ImageNet", "imagenet_knn": "ImageNet",
    "places205_mhead_linear": "Places205", "inat18_linear": "iNat2018",
    "voc07_svm": "VOC2007", "voc07_lowshot_svm": "VOC2007",
    "voc0712_frcnn_c4_24k": "voc_2007_trainval+voc_2012_trainval",
    "voc0712_frcnn_dc5_24k": "voc_2007_trainval+voc_2012_trainval",
    "coco_mrcnn_c4_1x": "coco_2017_train", "coco_mrcnn_c4_2x": "coco_2017_train",
    "coco_mrcnn_fpn_1x": "coco_2017_train", "coco_mrcnn_fpn_2x": "coco_2017_train",
    "coco_keypoint_rcnn_fpn_2x": "keypoints_coco_2017_train",
    "voc07_frcnn_c4_9k": "voc_2007_trainval", "lvis05_mrcnn_fpn_2x": "lvis_v0.5_train",
    "cityscapes_mrcnn_fpn": "cityscapes_fine_instance_seg_train",
    "cityscapes_fcn16_90k": "cityscapes_fine_sem_seg_train", "voc12aug_fcn16_30k": "voc_2012_train_aug",
    "coco_densepose_rcnn_fpn_s1x": "densepose_coco_2014_train+densepose_coco_2014_valminusminival",
    # the many-dataset linear transfer suite (evaluate/transfer_*.yaml)
    "transfer_aircraft": "FGVC-Aircraft", "transfer_caltech101": "Caltech-101", "transfer_cars": "Stanford Cars",
    "transfer_cifar10": "CIFAR-10", "transfer_cifar100": "CIFAR-100", "transfer_dtd": "DTD",
    "transfer_flowers": "Flowers-102", "transfer_food101": "Food-101", "transfer_pets": "Oxford-IIIT Pet",
    "transfer_sun397": "SUN397", "transfer_voc2007": "VOC2007",
}
FINETUNED = ("AP", "mIoU")  # metrics of protocols that fine-tune the whole network (detection, segmentation)


def layer_of(metric: str, protocol: str = "", layer: str = "") -> str:
    """The layer a number belongs to: an explicit one, else ``featureN`` named in metric or protocol, else GAP
    for classification metrics and the whole network for detection and segmentation ones (fine-tuned)."""
    if layer and layer != "all":
        return layer
    for text in (metric, protocol):
        if m := _FEATURE.search(text or ""):
            return m.group(0)
    return "finetuned" if str(metric).startswith(FINETUNED) else "gap"


def published_dataset(benchmark: str) -> str:
    """The dataset of ``benchmark``'s published figures; "" where unknown, which matches none of ours."""
    return PUBLISHED_DATASETS.get(benchmark, "")


def load_published(path: Path | str = DEFAULT_CSV) -> pd.DataFrame:
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"epochs": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot read published numbers ({e})") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: published-numbers CSV lacks columns {missing}")
    df["value"] = pd.to_numeric(df["value"], errors="raise")
    df["spread"] = pd.to_numeric(df["spread"].replace("", float("nan")), errors="raise")
    df["layer"] = [layer_of(m, p) for m, p in zip(df["metric"], df["protocol"])]
    df["dataset"] = df["benchmark"].map(published_dataset)
    return df
