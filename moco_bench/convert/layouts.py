"""The checkpoint layouts the converter knows, most specific first (detection takes the first match).

Each layout names its backbone copies (the first is what its reference evaluation loads), what else it
drops and why, and how its files count epochs: some store the number of epochs done (MoCo, DINO, mmengine),
others the index of the last finished epoch (timm, torchvision's references, Lightning without loop state),
which reads one less.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch

from moco_bench.convert import hf_names
from moco_bench.convert.d2_names import torchvision_key
from moco_bench.convert.formats import Copy, Epochs, Format, register_format

MOMENTUM = "momentum (key/teacher) encoder"
QUEUE = "queue of negative keys"
PROJECTION = "projection head"
EMA = "exponential moving average of the weights"
STUDENT = "student network (the teacher is the one evaluated, as in DINO)"


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def epochs_done(writer: str) -> Callable[[Mapping], Epochs]:
    """``epoch`` (or mmengine's ``meta.epoch``) is the number of epochs done."""
    def read(ckpt: Mapping) -> Epochs:
        meta = ckpt.get("meta")
        value = _int(ckpt.get("epoch"))
        if value is None and isinstance(meta, Mapping):
            value = _int(meta.get("epoch"))
        return Epochs(value, f"epoch {value}: {writer} stores the number of epochs done" if value is not None
                      else "the file records no epoch")
    return read


def epoch_index(writer: str) -> Callable[[Mapping], Epochs]:
    """``epoch`` is the 0-based index of the last finished epoch, so one more epochs are done."""
    def read(ckpt: Mapping) -> Epochs:
        value = _int(ckpt.get("epoch"))
        if value is None:
            return Epochs(None, "the file records no epoch")
        return Epochs(value + 1, f"epoch {value}: {writer} stores the index of the last finished epoch")
    return read


def lightning_epochs(ckpt: Mapping) -> Epochs:
    """Lightning's fit loop counts the epochs whose training finished; its ``epoch`` field is the index of
    the epoch being trained (one less at an epoch-end checkpoint, equal after ``fit`` returned)."""
    try:
        done = _int(ckpt["loops"]["fit_loop"]["epoch_progress"]["total"]["processed"])
    except (KeyError, TypeError):
        done = None
    if done is not None:
        return Epochs(done, f"Lightning's fit loop: {done} epochs processed (epoch field {ckpt.get('epoch')})")
    index = epoch_index("Lightning (no loop state in the file)")(ckpt)
    return Epochs(index.completed, index.how + ", assumed saved at that epoch's end")


def _vissl_epochs(ckpt: Mapping) -> Epochs:
    phase = _int(ckpt.get("train_phase_idx"))
    if phase is None:
        return Epochs(None, "the file records no train_phase_idx")
    return Epochs(phase + 1, f"train_phase_idx {phase}: VISSL stores the index of the training phase done")


def _stated(ckpt: Mapping) -> Epochs:
    value = _int(ckpt.get("epoch"))
    return Epochs(value, "no epoch recorded" if value is None else
                  f"epoch {value} as stored; this layout does not say whether it counts epochs done")


def _no_epochs(ckpt: Mapping) -> Epochs:
    return Epochs(None, "this layout records no epoch")


def _state_dict(ckpt: Mapping) -> tuple[str, Mapping] | None:
    """The usual home of a model's weights: ``state_dict``, ``model``, or the checkpoint itself."""
    for key in ("state_dict", "model"):
        if isinstance(ckpt.get(key), Mapping):
            return key, ckpt[key]
    if any(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return "the top level", ckpt
    return None


def _containers(*keys: str, requires: Callable[[Mapping], bool] = lambda ckpt: True):
    """Several top-level weight containers (a model and its EMA), located together when ``requires`` holds."""
    def locate(ckpt: Mapping) -> tuple[str, Mapping] | None:
        if not isinstance(ckpt.get(keys[0]), Mapping) or not requires(ckpt):
            return None
        found = {k: ckpt[k] for k in keys if isinstance(ckpt.get(k), Mapping)}
        return ", ".join(found), found
    return locate


def _classy(ckpt: Mapping) -> tuple[str, Mapping] | None:
    classy = ckpt.get("classy_state_dict")
    if not isinstance(classy, Mapping):
        return None
    return "classy_state_dict", {k: classy[k] for k in ("base_model", "loss") if isinstance(classy.get(k), Mapping)}


_PARAMETERS = re.compile(r"^\w+_parameters$")


def _children_state(ckpt: Mapping) -> tuple[str, Mapping] | None:
    """lightly's tutorials: ``{'resnet18_parameters': backbone.state_dict()}``, or that state dict bare."""
    named = [k for k, v in ckpt.items() if isinstance(k, str) and _PARAMETERS.match(k) and isinstance(v, Mapping)]
    if len(named) == 1:
        return named[0], ckpt[named[0]]
    return _state_dict(ckpt)


def _lightning(ckpt: Mapping) -> tuple[str, Mapping] | None:
    """A PyTorch Lightning checkpoint's ``state_dict``."""
    return _state_dict(ckpt) if "pytorch-lightning_version" in ckpt else None


def _trained_model(ckpt: Mapping) -> tuple[str, Mapping] | None:
    """``model`` of a training script's ``{epoch, model, optimizer}`` (barlowtwins' main.py)."""
    if isinstance(ckpt.get("model"), Mapping) and "epoch" in ckpt and "optimizer" in ckpt:
        return "model", ckpt["model"]
    return None


# torchvision ResNet children in order; lightly's examples keep them as nn.Sequential(*children[:-1]).
_SEQUENTIAL = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def _from_sequential(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{_SEQUENTIAL.get(head, head)}.{tail}"


# The producers below are read key for key from their source (the file each description names).
register_format(Format(
    name="hf-resnet", description="Hugging Face transformers ResNetModel / ResNetForImageClassification "
                                  "(save_pretrained; transformers/models/resnet/modeling_resnet.py)",
    locate=_state_dict, copies=(Copy("model", "", "backbone"),),
    reference="transformers' ResNetModel is the backbone of ResNetForImageClassification", epochs=_no_epochs,
    drop={"classifier": "classifier", "pooler": "pooling"}, signals=("embedder.embedder",),
    wrappers=("module", "resnet"), rename=hf_names.torchvision_key))

register_format(Format(
    name="byol-pytorch", description="byol-pytorch BYOL learner (lucidrains/byol-pytorch byol_pytorch.py: net, "
                                     "online_encoder.{net,projector}, online_predictor, target_encoder)",
    locate=_state_dict,
    copies=(Copy("model", "net", "online network"),
            Copy("model", "online_encoder.net", "online network (the same module, kept twice)"),
            Copy("momentum", "target_encoder.net", MOMENTUM)),
    reference="byol-pytorch's README and trainer.py save the online network, learner.net", epochs=_no_epochs,
    drop={"online_encoder.projector": PROJECTION, "target_encoder.projector": MOMENTUM,
          "online_predictor": "prediction head"},
    inner_drop={"fc": "classifier"}, signals=("online_encoder.net",)))

# SwAV's ResNet pads by 1 (ConstantPad2d) before a conv1 of padding 2: torchvision's conv1 with padding 3.
register_format(Format(
    name="swav", description="SwAV / DeepCluster-v2 (facebookresearch/swav main_swav.py, src/resnet50.py: the "
                             "ResNet with projection_head and prototypes, under DistributedDataParallel)",
    locate=_state_dict, copies=(Copy("model", "", "backbone"),),
    reference="swav's eval_linear.py loads the ResNet's own keys", epochs=epochs_done("swav's main_swav.py"),
    drop={"projection_head": PROJECTION, "prototypes": "prototypes (cluster centres)"}, signals=("prototypes",)))

register_format(Format(
    name="barlowtwins", description="Barlow Twins training checkpoint (facebookresearch/barlowtwins main.py: "
                                    "checkpoint.pth with model = BarlowTwins under DistributedDataParallel)",
    locate=_trained_model, copies=(Copy("model", "backbone", "backbone"),),
    reference="barlowtwins' main.py saves model.module.backbone as resnet50.pth, which evaluate.py loads",
    epochs=epochs_done("barlowtwins' main.py"),
    drop={"projector": PROJECTION, "bn": "normalization of the projector output"}, signals=("projector",)))

register_format(Format(
    name="bolts-moco", description="Lightning Bolts Moco_v2 / MoCo (pl_bolts/models/self_supervised/moco/"
                                   "moco2_module.py, moco_module.py: a Lightning checkpoint)",
    locate=_lightning, copies=(Copy("model", "encoder_q", "query encoder"), Copy("momentum", "encoder_k", MOMENTUM)),
    reference="Bolts' MoCo, as facebookresearch/moco, evaluates encoder_q", epochs=lightning_epochs,
    drop={"queue": QUEUE, "queue_ptr": QUEUE, "val_queue": "queue of validation keys",
          "val_queue_ptr": "queue of validation keys", "head_q": PROJECTION, "head_k": MOMENTUM},
    inner_drop={"fc": PROJECTION}, signals=("encoder_q",)))

register_format(Format(
    name="dino", description="DINO-style teacher/student checkpoint (facebookresearch/dino)",
    locate=_containers("teacher", "student", requires=lambda c: isinstance(c.get("student"), Mapping)),
    copies=(Copy("teacher", "teacher.backbone", "teacher network"), Copy("student", "student.backbone", STUDENT)),
    reference="DINO's eval_linear.py evaluates the teacher", epochs=epochs_done("DINO's main_dino.py"),
    drop={"teacher.head": PROJECTION, "student.head": PROJECTION}, signals=("teacher.backbone",)))

register_format(Format(
    name="vissl", description="VISSL checkpoint (classy_state_dict, trunk._feature_blocks)", locate=_classy,
    copies=(Copy("model", "base_model.model.trunk._feature_blocks", "trunk"),
            Copy("momentum", "loss.moco_encoder.trunk._feature_blocks", MOMENTUM)),
    reference="VISSL's benchmarks evaluate the trunk", epochs=_vissl_epochs,
    drop={"base_model.model.heads": "heads", "loss": f"loss state ({QUEUE}, {MOMENTUM})"},
    signals=("base_model.model.trunk",)))

register_format(Format(
    name="mocov3", description="MoCo v3 (facebookresearch/moco-v3 main_moco.py)", locate=_state_dict,
    copies=(Copy("model", "base_encoder", "base encoder"), Copy("momentum", "momentum_encoder", MOMENTUM)),
    reference="moco-v3's main_lincls.py loads module.base_encoder", epochs=epochs_done("moco-v3's main_moco.py"),
    drop={"predictor": "prediction head"}, inner_drop={"fc": PROJECTION}, signals=("base_encoder",)))

register_format(Format(
    name="moco", description="MoCo v1/v2 (facebookresearch/moco main_moco.py)", locate=_state_dict,
    copies=(Copy("model", "encoder_q", "query encoder"), Copy("momentum", "encoder_k", MOMENTUM)),
    reference="moco's main_lincls.py loads module.encoder_q", epochs=epochs_done("moco's main_moco.py"),
    drop={"queue": QUEUE, "queue_ptr": QUEUE}, inner_drop={"fc": PROJECTION}, signals=("encoder_q",),
    excludes=("backbone",)))

register_format(Format(
    name="solo-learn", description="solo-learn (PyTorch Lightning checkpoint)", locate=_state_dict,
    copies=(Copy("model", "backbone", "online backbone"), Copy("momentum", "momentum_backbone", MOMENTUM)),
    reference="solo-learn's linear evaluation loads backbone", epochs=lightning_epochs,
    drop={"projector": PROJECTION, "predictor": "prediction head", "momentum_projector": MOMENTUM,
          "classifier": "online linear classifier", "momentum_classifier": "online linear classifier",
          "queue": QUEUE, "queue_ptr": QUEUE},
    signals=("projector", "momentum_backbone", "momentum_projector", "classifier")))

register_format(Format(
    name="lightly", description="lightly / PyTorch Lightning module (backbone as named or Sequential children)",
    locate=_state_dict,
    copies=(Copy("model", "backbone", "online backbone"), Copy("momentum", "backbone_momentum", MOMENTUM)),
    reference="lightly's examples evaluate backbone", epochs=lightning_epochs,
    drop={"projection_head": PROJECTION, "prediction_head": "prediction head",
          "projection_head_momentum": MOMENTUM, "criterion": "loss state (memory bank of negatives)"},
    signals=("projection_head", "prediction_head", "backbone_momentum", "backbone.0"),
    top_signals=("pytorch-lightning_version",), wrappers=("module", "model"), rename=_from_sequential))

_MM_MOMENTUM_NECKS = ("encoder_k.1", "encoder_k.module.1", "momentum_encoder.module.1", "target_net.module.1",
                      "target_net.1")
_MM_EMA_STEPS = ("encoder_k.steps", "momentum_encoder.steps", "target_net.steps")
register_format(Format(
    name="mmselfsup", description="mmselfsup / mmpretrain (state_dict with backbone.*)", locate=_state_dict,
    copies=(Copy("model", "backbone", "backbone"),
            Copy("model", "encoder_q.0", "query encoder (backbone and neck, stored twice)"),
            Copy("model", "online_net.0", "online network (backbone and neck, stored twice)"),
            Copy("model", "encoder_q", "query encoder"),
            *(Copy("momentum", p, MOMENTUM) for p in ("encoder_k.module.0", "momentum_encoder.module.0",
                                                     "target_net.module.0", "encoder_k.0", "target_net.0",
                                                     "encoder_k"))),
    reference="mmselfsup/mmpretrain benchmarks load backbone.*", epochs=epochs_done("mmengine/mmcv's runner"),
    drop={"neck": PROJECTION, "head": "head", "encoder_q.1": "query neck (stored twice)",
          "online_net.1": "online neck (stored twice)", **dict.fromkeys(_MM_MOMENTUM_NECKS, "momentum encoder's neck"),
          **dict.fromkeys(_MM_EMA_STEPS, "EMA step counter"),
          "queue": QUEUE, "queue_ptr": QUEUE, "data_preprocessor": "data preprocessor buffers"},
    inner_drop={"fc": PROJECTION}, signals=("backbone",)))

register_format(Format(
    name="timm", description="timm train.py checkpoint (CheckpointSaver: state_dict, state_dict_ema)",
    locate=_containers("state_dict", "state_dict_ema",
                       requires=lambda c: "state_dict_ema" in c or ("version" in c and "arch" in c)),
    copies=(Copy("model", "state_dict", "model weights"), Copy("ema", "state_dict_ema", EMA)),
    reference="timm's validate.py loads state_dict unless --use-ema",
    epochs=epoch_index("timm's CheckpointSaver"), inner_drop={"fc": "classifier"},
    signals=("state_dict.conv1", "state_dict.layer1")))

register_format(Format(
    name="torchvision-reference", description="torchvision references/classification/train.py checkpoint",
    locate=_containers("model", "model_ema", requires=lambda c: "epoch" in c and ("args" in c or "optimizer" in c)),
    copies=(Copy("model", "model", "model weights"), Copy("ema", "model_ema", EMA)),
    reference="torchvision's train.py loads model (model_ema with --model-ema)",
    epochs=epoch_index("torchvision's references/classification/train.py"),
    drop={"model_ema.n_averaged": "EMA step counter"}, inner_drop={"fc": "classifier"},
    signals=("model.conv1", "model.layer1")))

register_format(Format(
    name="resnet-children", description="ResNet children as nn.Sequential (lightly's backbone; bare or under "
                                        "<arch>_parameters)",
    locate=_children_state, copies=(Copy("model", "", "backbone"),),
    reference="the file holds one backbone", epochs=_no_epochs, signals=("4.0",), rename=_from_sequential))

register_format(Format(
    name="detectron2", description="detectron2 weights (.pkl with model: stem.*, res2..res5; MoCo's conversion)",
    locate=lambda ckpt: ("model", ckpt["model"]) if isinstance(ckpt.get("model"), Mapping) else None,
    copies=(Copy("model", "", "backbone"),), reference="the file holds one backbone", epochs=_no_epochs,
    signals=("stem.conv1", "res2"), rename=torchvision_key))

register_format(Format(
    name="torchvision", description="torchvision ResNet state dict", locate=_state_dict,
    copies=(Copy("model", "", "backbone"),), reference="the file holds one backbone", epochs=_stated,
    drop={"fc": "classifier"}, signals=("conv1", "bn1", "layer1")))
