"""Checkpoint formats in, torchvision and detectron2 weights out, with a key report for every conversion."""

from moco_bench.convert.arch import ARCHS, detect_arch
from moco_bench.convert.backbone import ConvertedBackbone, load_backbone, random_backbone, write_torchvision
from moco_bench.convert.d2_names import detectron2_key, torchvision_key
from moco_bench.convert.detectron2 import read_detectron2_pkl, write_detectron2
from moco_bench.convert.formats import FORMATS, ROLES, detect_format
from moco_bench.convert.loading import read_checkpoint
from moco_bench.convert.outputs import write_outputs
from moco_bench.convert.report import KeyReport

__all__ = [
    "ARCHS", "FORMATS", "ROLES", "ConvertedBackbone", "KeyReport", "detect_arch", "detect_format",
    "detectron2_key", "load_backbone", "random_backbone", "read_checkpoint", "read_detectron2_pkl",
    "torchvision_key", "write_detectron2", "write_outputs", "write_torchvision",
]
