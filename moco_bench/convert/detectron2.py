"""detectron2 weights in the form MoCo's detection transfer uses (moco: detection/convert-pretrain-to-detectron2.py).

The renaming rules are MoCo's, applied to torchvision keys; detectron2 then places ``res5`` into the C4
ROI heads by its matching heuristics, which the ``matching_heuristics`` flag turns on.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from moco_bench.convert.backbone import ConvertedBackbone
from moco_bench.convert.d2_names import detectron2_key
from moco_bench.convert.safe_pickle import read_pickle
from moco_bench.core.atomic import atomic_write_bytes
from moco_bench.core.errors import CheckpointError

AUTHOR = "moco-bench"


def detectron2_checkpoint(backbone: ConvertedBackbone) -> dict:
    """The dict MoCo's converter pickles: ``model`` (numpy arrays), ``__author__``, ``matching_heuristics``."""
    model = {detectron2_key(k): v.detach().cpu().numpy() for k, v in backbone.state_dict.items()}
    if len(model) != len(backbone.state_dict):
        raise CheckpointError(f"{backbone.path}: two backbone keys map to one detectron2 key")
    return {"model": model, "__author__": AUTHOR, "matching_heuristics": True}


def write_detectron2(backbone: ConvertedBackbone, path: str | Path) -> Path:
    """Write the detectron2 ``.pkl`` and log torchvision -> detectron2 keys in the backbone's report."""
    data = pickle.dumps(detectron2_checkpoint(backbone), protocol=4)
    atomic_write_bytes(Path(path), data)
    backbone.report.detectron2 = {k: detectron2_key(k) for k in backbone.state_dict}
    return Path(path)


def read_detectron2_pkl(path: str | Path) -> dict:
    """Read a detectron2 weights pickle without running code from it; only numpy arrays are accepted."""
    data = read_pickle(Path(path))
    if not isinstance(data, Mapping) or not isinstance(data.get("model"), Mapping):
        raise CheckpointError(f"{path}: not a detectron2 weights file: expected a dict with a 'model' dict")
    bad = [k for k, v in data["model"].items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
    if bad:
        raise CheckpointError(f"{path}: 'model' should map names to numpy arrays; not so for {bad[:5]}")
    return dict(data)
