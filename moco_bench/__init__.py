"""moco-bench: pretrain MoCo, convert any SSL checkpoint, run the standard transfer protocols."""

__version__ = "0.1.0"
