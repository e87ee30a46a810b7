"""The data vocabulary configs share: a reader on a root with two splits (``data``), and the test transform.

Evaluation configs (:mod:`moco_bench.evaluators.schema`) and the pretraining monitor (:mod:`moco_bench.pretrain.schema`)
both use these blocks; ``data.reader`` names a reader of :mod:`moco_bench.data.registry`, whose own schema bounds
``data.options``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from moco_bench.core.schema import MAX_SIDE, MISSING, field


@dataclass
class Data:
    """One data vocabulary for every evaluator: a reader on a root, two splits."""

    name: str = MISSING  # for tables
    reader: str = MISSING
    root: str = MISSING
    train_split: str = MISSING
    test_split: str = MISSING
    classes: Any = MISSING  # the expected class count, or the class names in label order
    options: Dict[str, Any] = field({})  # reader options (Places205: layout), held by the reader's schema
    # published image count per split (null: a base file's split this config does not read); a partial copy is an
    # error, and a key naming no split read is a config error (a misspelling would turn the check off)
    expect: Optional[Dict[str, Optional[int]]] = None


@dataclass
class TestTransform:
    """Shorter edge to ``resize``, then a center ``crop`` and/or a ``square`` resize."""

    resize: int = field(min=1, max=MAX_SIDE)
    crop: Optional[int] = field(None, min=1, max=MAX_SIDE)
    square: Optional[int] = field(None, min=1, max=MAX_SIDE)


@dataclass
class Transform:
    mean: List[float] = MISSING
    std: List[float] = field(min=1e-6, each=True)
    test: TestTransform = MISSING
