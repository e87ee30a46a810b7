"""Models: backbones by name (torchvision's ResNets and the small-image variants), the MoCo module, feature taps."""

from moco_bench.models.moco import MoCo, make_encoder
from moco_bench.models.resnets import ARCHS, SMALL_IMAGE, build

__all__ = ["ARCHS", "MoCo", "SMALL_IMAGE", "build", "make_encoder"]
