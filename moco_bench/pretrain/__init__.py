"""MoCo pretraining: the training loop, distributed helpers (key gather, shuffle BN), checkpoints, logs, kNN monitor.

Entry point: :func:`moco_bench.pretrain.train.pretrain` (``moco-bench pretrain --config pretrain/<recipe>.yaml``).
"""
