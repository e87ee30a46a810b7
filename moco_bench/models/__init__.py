"""Models: the MoCo module over torchvision ResNets."""

from moco_bench.models.moco import MoCo, make_encoder

__all__ = ["MoCo", "make_encoder"]
