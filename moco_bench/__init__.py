"""moco-bench: pretrain MoCo, convert any SSL checkpoint, run the standard transfer protocols.

The Python API (:mod:`moco_bench.api`): ``evaluate``, ``load_results``, ``report``; imported on first use, so that
``import moco_bench`` stays light.
"""

__version__ = "0.1.0"
__all__ = ["evaluate", "load_results", "report"]


def __getattr__(name):
    if name in __all__:
        from moco_bench import api

        return getattr(api, name)
    raise AttributeError(f"module 'moco_bench' has no attribute {name!r}")
