"""Checkpoint formats in, torchvision and detectron2 weights out, with a key report for every conversion.

The names below are imported on first use, so that ``moco-bench --help`` (which imports the ``convert``
command's module) does not load torch.
"""

import importlib

_EXPORTS = {
    "ARCHS": "arch", "detect_arch": "arch",
    "ConvertedBackbone": "backbone", "load_backbone": "backbone", "random_backbone": "backbone",
    "write_torchvision": "backbone",
    "detectron2_key": "d2_names", "torchvision_key": "d2_names",
    "read_detectron2_pkl": "detectron2", "write_detectron2": "detectron2",
    "FORMATS": "formats", "ROLES": "formats", "detect_format": "formats",
    "read_checkpoint": "loading",
    "write_outputs": "outputs",
    "KeyReport": "report",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = sorted(_EXPORTS)
