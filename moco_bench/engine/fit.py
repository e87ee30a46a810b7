"""Whether a checkpoint fits an evaluation, known before any work: its architecture against the protocol's
``arch``, raw pixels against a protocol that needs a network, every pooling spec against the maps the network gives
at the protocol's image sizes, and a detectron2 protocol's heads and FPN levels against the backbone's blocks and
stem. ``eval`` refuses a misfit at once; ``eval-all`` names every misfit of a suite in one message."""

from __future__ import annotations

from functools import lru_cache
from typing import List

from omegaconf import DictConfig, OmegaConf

from moco_bench.core.errors import MocoBenchError
from moco_bench.data.transforms import eval_size
from moco_bench.evaluators.catalog import pixel_protocols, spec
from moco_bench.models import resnets
from moco_bench.models.taps import FeatureTaps

BASIC_BLOCKS = ("resnet18", "resnet34")  # detectron2's Res5ROIHeads and a dilated res5 need bottleneck blocks


@lru_cache(maxsize=4)
def _network(arch: str):
    return resnets.build(arch).eval()


def misfits(backbone, cfg: DictConfig) -> List[str]:
    """Every reason ``backbone`` cannot run under ``cfg`` (empty when it can), each one line."""
    if backbone.format == "pixels":
        if spec(str(cfg.evaluator)).takes_pixels:
            return []
        return [f"the {cfg.evaluator} protocol needs a network; raw pixels run only with "
                f"{', '.join(pixel_protocols())}"]
    out = []
    if "arch" in cfg and str(cfg.arch) != backbone.arch:
        out.append(f"the protocol is set up for {cfg.arch} (its pooling and sizes), the checkpoint is a "
                   f"{backbone.arch}: override arch={backbone.arch} together with features.pooling for it")
    if "features" in cfg and "pooling" in cfg.features:
        out += _pooling_misfits(backbone.arch, cfg)
    if "d2_config" in cfg:
        out += _detectron2_misfits(backbone.arch, cfg)
    return out


def _pooling_misfits(arch: str, cfg: DictConfig) -> List[str]:
    """Each layer's pooling at the test size (and the training crop of a linear protocol, which must give the
    same feature length as the heads are built for)."""
    pooling = OmegaConf.to_container(cfg.features.pooling, resolve=True)
    layers = [str(n) for n in cfg.features.layers]
    sizes = {"test": eval_size(cfg.transform.test)}
    if "train" in cfg.transform and cfg.transform.train.get("crop"):
        sizes["train"] = int(cfg.transform.train.crop)
    try:
        taps = FeatureTaps(_network(arch), layers, {n: pooling[n] for n in layers if n in pooling})
        dims = {kind: taps.dims(size) for kind, size in sizes.items()}
    except (MocoBenchError, KeyError) as e:
        return [f"features.pooling on a {arch} at {max(sizes.values())} px: {e}"]
    if "train" in dims and dims["train"] != dims["test"]:
        return [f"features: the {sizes['train']} px training crop gives feature lengths {dims['train']}, the "
                f"{sizes['test']} px test images {dims['test']}; one head cannot take both"]
    return []


def protocol_d2(cfg: DictConfig, arch: str):
    """The detectron2 config a protocol builds on ``arch`` (before the run's datasets and device), or None where
    it cannot be read here: without detectron2 (the evaluation is then skipped anyway) or for DensePose, whose
    keys come from its own project. Raises ConfigError where the protocol refuses ``arch``."""
    try:
        from moco_bench.evaluators.detection.detection import protocol_d2_config, require_detectron2
        from moco_bench.evaluators.segmentation.semseg import semseg_task

        require_detectron2()
    except MocoBenchError:
        return None
    if cfg.evaluator == "densepose":
        return None
    return protocol_d2_config(cfg, arch, semseg_task() if cfg.evaluator == "detectron2_semseg" else None)


def _detectron2_misfits(arch: str, cfg: DictConfig) -> List[str]:
    """The backbone builder for this stem, Res5 heads and a dilated res5 on bottleneck blocks, the FPN levels."""
    try:
        d2 = protocol_d2(cfg, arch)
        if d2 is None:
            return []
        from moco_bench.evaluators.detection.backbones import check_fpn_levels

        rcnn = d2.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
        if rcnn and "Res5" in str(d2.MODEL.ROI_HEADS.NAME) and (arch in BASIC_BLOCKS or arch in resnets.SMALL_IMAGE):
            return [f"{d2.MODEL.ROI_HEADS.NAME} runs res5's bottleneck blocks as the box head; a {arch} has "
                    "BasicBlocks: use an FPN protocol, or a ResNet-50 or larger"]
        check_fpn_levels(d2, arch, str(cfg.get("_source_", cfg.name)))
    except MocoBenchError as e:
        return [str(e)]
    return []
