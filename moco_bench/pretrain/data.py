"""The pretraining images and their loader: two augmented views of each image, made by PIL in the loader
workers (``data.pipeline: pil``, main_moco.py's way) or on the training device, the workers only reading the
files: image by image by torchvision (``tensor``) or a whole batch per operation (``batched``)."""

from __future__ import annotations

from typing import Mapping

from omegaconf import DictConfig
from torch.utils.data import DataLoader, DistributedSampler

from moco_bench.core.config import resolved, source_of
from moco_bench.core.errors import ConfigError, DataError
from moco_bench.data.catalog import open_split
from moco_bench.data.transforms import TwoCropsTransform, moco_v1_augment, moco_v2_augment

AUGMENTS = {"moco_v1": moco_v1_augment, "moco_v2": moco_v2_augment}
AUGMENT_KEYS = {"moco_v1": ("crop", "scale", "grayscale_p", "jitter", "mean", "std"),
                "moco_v2": ("crop", "scale", "jitter", "jitter_p", "grayscale_p", "blur_sigma", "blur_p", "mean",
                            "std")}


def augment_args(aug: Mapping) -> dict:
    return {k: aug[k] for k in AUGMENT_KEYS[aug["kind"]]}


def tensor_augment(aug: Mapping, pipeline: str = "tensor"):
    """The two views of the ``tensor`` or ``batched`` pipeline: ``(encoded images, device) -> (im_q, im_k)``."""
    if pipeline == "batched":
        from moco_bench.data.batch_augment import BatchTwoCrops, moco_batch_augment

        return BatchTwoCrops(moco_batch_augment(aug["kind"], **augment_args(aug)))
    from moco_bench.data.tensor_augment import TensorTwoCrops, moco_tensor_augment

    return TensorTwoCrops(moco_tensor_augment(aug["kind"], **augment_args(aug)))


def in_workers(cfg: DictConfig, device) -> bool:
    """Whether the loader workers make the views: PIL's always; the batched pipeline's on a CPU device with
    workers (the step's threads then keep their cores), on a GPU the step does, on the device."""
    return cfg.data.pipeline == "batched" and device.type == "cpu" and cfg.data.workers > 0


def build_dataset(cfg: DictConfig):
    """``data.reader`` on ``data.root`` / ``data.split``: two augmented PIL views per item, or the file bytes."""
    aug, data = resolved(cfg.transform), resolved(cfg.data)
    transform = TwoCropsTransform(AUGMENTS[aug["kind"]](**augment_args(aug))) if data["pipeline"] == "pil" else None
    dataset = open_split({**data, "classes": None}, data["split"], transform, source_of(cfg))
    if len(dataset) < cfg.data.batch_size:
        raise DataError(f"{cfg.data.root}/{cfg.data.split}: {len(dataset)} images, fewer than one global batch "
                        f"(data.batch_size={cfg.data.batch_size})")
    if data["pipeline"] != "pil":
        from moco_bench.data.tensor_augment import EncodedImages

        if not hasattr(dataset, "samples"):
            raise ConfigError(f"{source_of(cfg)}: data.pipeline {data['pipeline']} reads image files; the "
                              f"{data['reader']} reader's images are not files (shards): use data.pipeline pil")
        dataset = EncodedImages(dataset)
        # decode and augment one image now, not after the model is built
        tensor_augment(aug, data["pipeline"])([dataset[0][0]], "cpu")
    else:
        dataset[0]  # read and augment one image now rather than fail after the model is built
    return dataset


def build_loader(cfg: DictConfig, dataset, env) -> DataLoader:
    """Each process's share of the global batch, shuffled per epoch by a DistributedSampler (one process too)."""
    sampler = DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=cfg.seed,
                                 drop_last=True)
    collate = None
    if in_workers(cfg, env.device):
        from moco_bench.data.batch_augment import CollateTwoCrops

        collate = CollateTwoCrops(tensor_augment(resolved(cfg.transform), "batched"))
    elif cfg.data.pipeline != "pil":
        from moco_bench.data.tensor_augment import collate_encoded as collate
    return DataLoader(dataset, cfg.data.batch_size // env.world_size, sampler=sampler, num_workers=cfg.data.workers,
                      pin_memory=env.device.type == "cuda", drop_last=True, collate_fn=collate)
