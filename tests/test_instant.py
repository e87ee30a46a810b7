"""Every shipped protocol config runs a few steps on the embedded data (detectron2's "instant" configs idea):
the protocol file itself, with only its data pointed at the embedded sets and its sizes and schedule cut down
by overrides, through the runner, to a finished record."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from moco_bench.convert import load_backbone
from moco_bench.data.embedded import FASHION_CLASSES
from moco_bench.engine.runner import run_evaluation
from moco_bench.evaluators.catalog import load_evaluation

EVALUATE = Path(__file__).resolve().parents[1] / "evaluate"
ALL = sorted(p.stem for p in EVALUATE.glob("*.yaml") if load_evaluation(p).comparability.get("protocol") == p.stem)
# Protocols whose sources are not VOC/COCO folders run in tests/test_transfer_tasks.py, on their own embedded sets
# (the protocol file itself, or its demo derivative where the protocol's R50 on CPU would take minutes).
ELSEWHERE = {"lvis05_mrcnn_fpn_2x": "test_lvis_through_the_cli",
             "cityscapes_mrcnn_fpn": "test_cityscapes_instance_through_the_cli",
             "voc12aug_fcn16_30k": "test_voc_semseg_protocol_through_the_cli",
             "cityscapes_fcn16_90k": "test_cityscapes_semseg_through_the_cli",
             "coco_densepose_rcnn_fpn_s1x": "test_densepose_without_its_project_is_skipped_with_the_install_route",
             # the transfer suite's sets have their own layouts: tests/test_transfer_protocol.py, test_transfer_probe.py
             **{f"transfer_{n}": "test_protocol_end_to_end_on_each_dataset" for n in (
                 "aircraft", "caltech101", "cars", "cifar10", "cifar100", "dtd", "flowers", "food101", "pets",
                 "sun397")},
             "transfer_voc2007": "test_voc07_protocol_end_to_end",
             "imagenet_probe_grid": "test_head_is_chosen_on_held_out_train_and_test_labels_change_no_choice"}
PROTOCOLS = [name for name in ALL if name not in ELSEWHERE]
CLASSES = "[" + ",".join(FASHION_CLASSES) + "]"
D2_TINY = ["d2_overrides.SOLVER.MAX_ITER=1", "d2_overrides.SOLVER.IMS_PER_BATCH=2", "d2_overrides.SOLVER.STEPS=[]",
           "d2_overrides.SOLVER.WARMUP_ITERS=0", "d2_overrides.TEST.PRECISE_BN.ENABLED=false",
           "d2_overrides.INPUT.MIN_SIZE_TRAIN=[64]", "d2_overrides.INPUT.MIN_SIZE_TEST=64",
           "d2_overrides.INPUT.MAX_SIZE_TRAIN=96", "d2_overrides.INPUT.MAX_SIZE_TEST=96",
           "d2_overrides.MODEL.RPN.POST_NMS_TOPK_TEST=16", "d2_overrides.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE=16",
           "trials=1"]


def _frozen(cfg, sets) -> list:
    """Point a classification protocol at the embedded tree (read by its own reader where it reads folders)."""
    voc, places = cfg.data.reader == "voc", cfg.data.reader == "places205"
    reader = "voc" if voc else "places205" if places else "imagefolder"
    data = [f"data.root={sets['voc'] if voc else sets['imagefolder']}", f"data.classes={CLASSES if voc else 10}",
            "data.expect=null", f"data.reader={reader}", "data.train_split=" + ("trainval" if voc else "train"),
            "data.test_split=" + ("test" if voc else "val")] + (["data.options.layout=folder"] if places else [])
    extra = {"voc07_svm": ["svm.costs=[1.0]"], "voc07_lowshot_svm": ["svm.costs=[1.0]", "lowshot.k=[1,2]",
                                                                    "lowshot.seeds=[1]"],
             "knn": ["knn.k=[5]"], "linear": [], "mhead_linear": [], "mhead_linear_fast": []}[cfg.evaluator]
    if cfg.evaluator in ("linear", "mhead_linear", "mhead_linear_fast"):
        extra = ["arch=resnet18", "schedule.epochs=1", "schedule.milestones=[1]", "optim.batch_size=100"]
    else:
        extra.append("features.batch_size=100")
    return data + extra


def _detection(cfg, sets) -> list:
    out = list(D2_TINY)
    for name, spec in cfg.datasets.sources.items():
        if spec is None:  # a source of the base file that this protocol drops
            continue
        if spec.format == "voc":
            out += [f"datasets.sources.{name}.root={sets['voc_tiny']}", f"datasets.sources.{name}.expect=null"]
            if name.endswith("trainval") and name not in cfg.datasets.train:
                continue
        else:
            split = "test" if name in cfg.datasets.test else "trainval"
            out += [f"datasets.sources.{name}.json={sets['coco_tiny']}/annotations/instances_{split}.json",
                    f"datasets.sources.{name}.image_root={sets['coco_tiny']}/{split}",
                    f"datasets.sources.{name}.expect=null"]
            out.append("d2_overrides.INPUT.MASK_FORMAT=bitmask")  # mini-COCO masks are RLE
            if spec.get("keypoints") == "coco_person":
                out.append(f"datasets.sources.{name}.keypoints={{flip: [[left, right]]}}")
    if any(s.format == "voc" for s in cfg.datasets.sources.values()):
        out.append(f"datasets.classes={CLASSES}")
    return list(dict.fromkeys(out))


@pytest.fixture(scope="module")
def sets(minivoc_root, data_cache):
    """Tiny sets: the protocols keep their 224 px transforms, so every image costs a full-size forward pass."""
    from moco_bench.data import embedded

    folder = embedded.build_imagefolder(data_cache / "embedded" / "imagefolder_tiny", train_per_class=3,
                                        val_per_class=2, size=32)
    voc = embedded.build_minivoc(data_cache / "embedded" / "minivoc_tiny", n_trainval=8, n_test=20)
    return {"imagefolder": folder, "voc": minivoc_root, "voc_tiny": voc,
            "coco_tiny": embedded.build_minicoco(voc, data_cache / "embedded" / "minicoco_tiny")}


@pytest.mark.parametrize("name", PROTOCOLS)
def test_protocol_runs_instantly_on_embedded_data(name, sets, tmp_path):
    cfg = load_evaluation(EVALUATE / f"{name}.yaml")
    detection = cfg.evaluator == "detectron2"
    if detection and importlib.util.find_spec("detectron2") is None:
        pytest.skip("detectron2 is not installed (scripts/install_detectron2.py, run by make setup)")
    overrides = _detection(cfg, sets) if detection else _frozen(cfg, sets)
    cfg = load_evaluation(EVALUATE / f"{name}.yaml", overrides)
    c4 = detection and any(k in str(cfg.d2_config) for k in ("c4", "dc5"))  # Res5 heads need bottleneck blocks
    backbone = load_backbone("random:resnet50" if c4 else "random:resnet18")
    record = run_evaluation(backbone, cfg, out_root=tmp_path, workers=0)
    assert record["status"] == "ok", record["error"]
    assert record["metrics"] and all(v == v for v in record["metrics"].values())  # numbers, none NaN
    assert record["evaluation"]["comparable"] is False  # embedded data: never set beside published numbers


def test_the_others_run_elsewhere():
    source = "".join(p.read_text() for p in sorted(Path(__file__).parent.glob("test_transfer_*.py")))
    assert set(ELSEWHERE) <= set(ALL)
    assert all(f"def {test}(" in source for test in ELSEWHERE.values())
