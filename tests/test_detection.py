"""Detection transfer (detectron2): every protocol config builds its model and takes every converted MoCo weight;
C4, FPN, Mask R-CNN and keypoint R-CNN fine-tune a few iterations on the embedded mini-VOC / mini-COCO and land
in the results store; Faster R-CNN fine-tunes on real tree boxes (deepforest); and the bad-input paths.

CPU-sized: one torch thread (a shared 2-core machine runs detectron2 several times slower with two), tiny
images and ROI counts, a handful of test images, 1-2 iterations per run.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from checkpoint_builders import DEMO_ARCH, make_moco_checkpoint, trained_like
from omegaconf import OmegaConf
from torch import nn

import moco_bench.evaluators.detection.detection  # noqa: F401 - registers the "detectron2" evaluator
from moco_bench import cli
from moco_bench.convert import load_backbone, read_detectron2_pkl, write_detectron2
from moco_bench.core.errors import CheckpointError, ConfigError
from moco_bench.core.schema import flatten
from moco_bench.data import embedded
from moco_bench.engine.runner import check_config, checkpoint_id, evaluate_checkpoint, run_evaluation
from moco_bench.evaluators.catalog import load_evaluation
from moco_bench.models import resnets
from moco_bench.results.store import load_results

REPO = Path(__file__).resolve().parents[1]
EVALUATE = REPO / "evaluate"
PROTOCOLS = ["voc0712_frcnn_c4_24k", "voc0712_frcnn_dc5_24k", "coco_mrcnn_c4_1x", "coco_mrcnn_c4_2x",
             "coco_mrcnn_fpn_1x", "coco_mrcnn_fpn_2x", "coco_keypoint_rcnn_fpn_2x"]
needs_d2 = pytest.mark.skipif(importlib.util.find_spec("detectron2") is None,
                              reason="detectron2 is not installed (scripts/install_detectron2.py, run by make setup)")
# A few iterations, few proposals, fast PreciseBN: merged into each demo's own d2_overrides.
SHORT = {"SOLVER": {"MAX_ITER": 2, "IMS_PER_BATCH": 2, "WARMUP_ITERS": 1}, "TEST": {"PRECISE_BN": {"NUM_ITER": 1}},
         "MODEL": {"RPN": {"POST_NMS_TOPK_TEST": 32}}}


@pytest.fixture(scope="module")
def tiny(data_cache):
    """An 8 + 20 image mini-VOC (every class in the test set) and its mini-COCO (the session's 40 + 40 set is slow
    to test on with R50-C4)."""
    voc = embedded.build_minivoc(data_cache / "embedded" / "minivoc_tiny", n_trainval=8, n_test=20)
    return {"voc": voc, "coco": embedded.build_minicoco(voc, data_cache / "embedded" / "minicoco_tiny")}


@pytest.fixture(scope="module")
def moco_r50(tmp_path_factory):
    """A MoCo-layout ResNet-50 checkpoint (module.encoder_q/k, queue) and its conversion."""
    torch.manual_seed(0)
    path = make_moco_checkpoint(trained_like(torchvision.models.resnet50()), tmp_path_factory.mktemp("moco") /
                                "checkpoint_0200.pth.tar").path
    backbone = load_backbone(path)
    pkl = write_detectron2(backbone, path.parent / "r50.pkl")
    return path, backbone, pkl


@pytest.fixture(scope="module")
def moco_r18(tmp_path_factory):
    torch.manual_seed(0)
    path = make_moco_checkpoint(trained_like(torchvision.models.resnet18()), tmp_path_factory.mktemp("moco18") /
                                "checkpoint_0200.pth.tar", arch="resnet18").path
    return load_backbone(path)


@pytest.fixture(scope="module")
def moco_small(tmp_path_factory):
    """The demo's backbone (3x3 stride-1 stem, half width): the demo FPN config's levels are written for it."""
    torch.manual_seed(0)
    path = make_moco_checkpoint(trained_like(resnets.build(DEMO_ARCH)), tmp_path_factory.mktemp("small") /
                                "checkpoint_0200.pth.tar", arch=DEMO_ARCH).path
    return load_backbone(path)


def demo(name: str, *overrides: str, d2=None):
    cfg = load_evaluation(EVALUATE / "demo" / name, list(overrides))
    cfg.d2_overrides = OmegaConf.merge(cfg.d2_overrides, SHORT, d2 or {})
    return cfg


def tiny_sources(cfg, root: Path, fmt: str):
    for name, spec in cfg.datasets.sources.items():
        if fmt == "voc":
            spec.root = str(root)
        else:
            split = "trainval" if name.endswith("trainval") else "test"
            spec.json, spec.image_root = str(root / "annotations" / f"instances_{split}.json"), str(root / split)
    return cfg


def _ok(record):
    assert record["status"] == "ok", record["error"]
    d = record["details"]
    assert d["images_evaluated"] == [float(d["test_images"])] * len(d["seeds"])  # every test image evaluated
    assert all(s > 0 for s in d["seconds_per_iter"])
    return record


def _published_benchmarks():
    with open(REPO / "results" / "published" / "numbers.csv") as f:
        return {row["benchmark"] for row in csv.DictReader(f)}


@needs_d2
@pytest.mark.parametrize("name", PROTOCOLS)
def test_protocol_model_takes_every_converted_moco_weight(name, moco_r50):
    """Each protocol config builds its detectron2 model (SyncBN made runnable here), and detectron2's matching
    heuristics place every converted backbone tensor, unchanged: res5 in the ROI head for C4."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from moco_bench.evaluators.detection import model as d2_model
    from moco_bench.evaluators.detection.trainer import new_config

    cfg = load_evaluation(EVALUATE / f"{name}.yaml")
    assert cfg.evaluator == "detectron2" and cfg.benchmark == name and name in _published_benchmarks()
    assert cfg.trials == (5 if name.startswith("voc") else 1)
    _, backbone, pkl = moco_r50
    d2 = new_config()
    d2.merge_from_file(str(REPO / cfg.d2_config))
    d2.merge_from_list(d2_model.resnet_options(backbone.arch) + ["MODEL.DEVICE", "cpu"])
    assert (d2.MODEL.PIXEL_MEAN, d2.INPUT.FORMAT, d2.MODEL.BACKBONE.FREEZE_AT) == ([123.675, 116.28, 103.53], "RGB", 0)
    norms = d2_model.usable_norms(d2, world_size=1, device="cpu")
    expected_norm = {"voc0712_frcnn_dc5_24k": "SyncBN"}.get(name, "naiveSyncBN" if "c4" in name else "SyncBN")
    assert norms["MODEL.RESNETS.NORM"]["config"] == expected_norm
    assert all(v["used"] != "SyncBN" for v in norms.values())
    model = build_model(d2)
    DetectionCheckpointer(model).load(str(pkl))
    weights = read_detectron2_pkl(pkl)["model"]
    report = d2_model.check_backbone_loaded(model, weights, str(pkl))
    assert report["loaded"] == len(weights) == len(backbone.state_dict)
    expected = {"backbone", "roi_heads"} if "c4" in name else {"backbone.bottom_up"}  # FPN, dilated C5: a ResNet inside
    assert set(report["placed_under"]) == expected
    if "c4" in name:
        assert isinstance(model.roi_heads.res5.norm, nn.Module)  # MoCo's extra norm after res5
    with torch.no_grad():  # the check can fail: one changed tensor is named
        model.state_dict()[next(k for k in model.state_dict() if k.endswith("res3.1.conv2.weight"))].add_(1)
    with pytest.raises(CheckpointError, match="res3.1.conv2.weight"):
        d2_model.check_backbone_loaded(model, weights, str(pkl))


@needs_d2
def test_c4_protocol_through_the_cli(moco_r50, tiny, tmp_path, capsys):
    """R50-C4 with the extra res5 norm and naiveSyncBN, from a MoCo checkpoint file via ``moco-bench eval``."""
    path = moco_r50[0]
    cfg = demo("voc_detection_c4.yaml", d2={"MODEL": {"ROI_HEADS": {"BATCH_SIZE_PER_IMAGE": 16}},
                                            "SOLVER": {"MAX_ITER": 1}})
    tree = flatten(OmegaConf.to_container(cfg.d2_overrides))
    overrides = [f"d2_overrides.{k}={json.dumps(v)}" for k, v in tree.items()]
    overrides += [f"datasets.sources.{n}.root={tiny['voc']}" for n in cfg.datasets.sources]
    # overrides before --config: argparse binds the optional positional list right after CKPT
    rc = cli.main(["eval", str(path), *overrides, "--config", str(EVALUATE / "demo" / "voc_detection_c4.yaml"),
                   "--out", str(tmp_path), "--workers", "0"])
    assert rc == 0, capsys.readouterr()
    record = json.loads(next(tmp_path.glob("checkpoint_0200-*/demo_voc_detection_c4.json")).read_text())
    _ok(record)
    assert set(record["metrics"]) == {"AP", "AP50", "AP75"}
    assert record["evaluation"]["norm"] == "naiveSyncBN" and record["evaluation"]["comparable"] is False
    assert record["details"]["norm"]["MODEL.RESNETS.NORM"] == {"config": "naiveSyncBN", "used": "naiveSyncBN"}
    assert record["details"]["weights_loaded"]["placed_under"] == ["backbone", "roi_heads"]
    assert record["checkpoint"]["format"] == "moco" and record["checkpoint"]["arch"] == "resnet50"
    work = tmp_path / next(tmp_path.glob("checkpoint_0200-*")).name / "demo_voc_detection_c4" / "trial0"
    assert (work / "log.txt").is_file() and (work / "d2_config.yaml").is_file()


@needs_d2
def test_fpn_voc_trials_mean_std_and_store(moco_small, tiny, tmp_path, capfd):
    cfg = tiny_sources(demo("voc_detection_fpn.yaml", "trials=2"), tiny["voc"], "voc")
    torch_rng = torch.random.get_rng_state()
    record = _ok(run_evaluation(moco_small, cfg, out_root=tmp_path, workers=0))
    printed = capfd.readouterr()  # detectron2's log (the model, dataset tables) and warnings go to each trial's log
    assert "GeneralizedRCNN" not in printed.out + printed.err and "Warning" not in printed.err
    trial_log = (tmp_path / checkpoint_id(moco_small) / cfg.name / "trial1" / "log.txt").read_text()
    assert "GeneralizedRCNN" in trial_log and "Starting training" in trial_log
    assert torch.equal(torch.random.get_rng_state(), torch_rng)  # trials seed their own RNGs, not the caller's
    m = record["metrics"]
    assert set(m) == {"AP", "AP50", "AP75", "AP_std", "AP50_std", "AP75_std"}
    assert all(0 <= m[k] <= 100 for k in ("AP", "AP50", "AP75"))
    assert {k: len(v) for k, v in record["per_seed"].items()} == {"AP": 2, "AP50": 2, "AP75": 2}
    assert m["AP50"] == pytest.approx(sum(record["per_seed"]["AP50"]) / 2)
    d, ev = record["details"], record["evaluation"]
    assert d["seeds"] == [0, 1] and ev["seeds"] == [0, 1] and d["iterations"] == [2, 2]
    assert set(d["per_category_AP"]["AP50"]) == set(embedded.FASHION_CLASSES)
    assert d["norm"]["MODEL.RESNETS.NORM"] == {"config": "SyncBN", "used": "BN"}  # one process
    assert d["norm"]["MODEL.FPN.NORM"] == {"config": "SyncBN", "used": "BN"}
    assert "norm SyncBN (run as BN: 1 process)" in ev["variant"] and ev["norm"] == "BN"
    assert d["weights_loaded"]["loaded"] == len(moco_small.state_dict)
    assert d["weights_loaded"]["placed_under"] == ["backbone.bottom_up"]
    df = load_results(tmp_path)
    assert set(df.metric) == set(m) and set(df.benchmark) == {"demo_voc_detection"} and not df.comparable.any()


@needs_d2
@pytest.mark.parametrize("kind", ["mask", "keypoint"])
def test_mask_and_keypoint_rcnn_on_minicoco(kind, moco_r18, tiny, tmp_path):
    cfg = tiny_sources(demo(f"coco_detection_{kind}_fpn.yaml"), tiny["coco"], "coco")
    record = _ok(run_evaluation(moco_r18, cfg, out_root=tmp_path, workers=0))
    second = {"mask": "APmk", "keypoint": "APkp"}[kind]
    assert set(record["metrics"]) == {f"{p}{s}" for p in ("APbb", second) for s in ("", "50", "75")}
    task = {"mask": "segm", "keypoint": "keypoints"}[kind]
    assert set(record["details"]["per_category_AP"]) == {"bbox", task}
    assert set(record["details"]["per_category_AP"]["bbox"]) == set(embedded.FASHION_CLASSES)
    assert (tmp_path / next(tmp_path.iterdir()).name / f"{cfg.name}.json").is_file()


@needs_d2
def test_real_tree_boxes_deepforest(data_cache, moco_r18, tmp_path):
    """Faster R-CNN on deepforest's real aerial tiles and VOC boxes, through the same VOC path."""
    from moco_bench.data.deepforest import build_deepforest_voc

    if importlib.util.find_spec("deepforest") is None:
        pytest.skip("deepforest's data is not installed (pip install --no-deps deepforest; make setup does it)")
    voc = build_deepforest_voc(data_cache / "embedded" / "deepforest")
    test_ids = (voc / "ImageSets" / "Main" / "test.txt").read_text().split()
    assert test_ids == ["OSBS_029_11", "SOAP_061_11"] and len(list((voc / "JPEGImages").glob("*.jpg"))) == 8
    record = _ok(run_evaluation(moco_r18, demo("deepforest_detection.yaml"), out_root=tmp_path, workers=0))
    assert record["details"]["test_images"] == len(test_ids)
    assert set(record["metrics"]) == {"AP", "AP50", "AP75"}
    assert list(record["details"]["per_category_AP"]["AP50"]) == ["Tree"]


@needs_d2
def test_nan_loss_stops_with_failed_record_and_log(moco_small, tiny, tmp_path):
    cfg = tiny_sources(demo("voc_detection_fpn.yaml", d2={"SOLVER": {"BASE_LR": 1e6, "MAX_ITER": 6}}),
                       tiny["voc"], "voc")
    record = run_evaluation(moco_small, cfg, out_root=tmp_path, workers=0)
    assert record["status"] == "failed" and "TrainingDiverged" in record["error"] and record["metrics"] == {}
    log_file = Path(record["error"].split("the log is kept in ")[1].split()[0])
    assert log_file.is_file() and "FloatingPointError" in log_file.read_text()


@needs_d2
def test_missing_dataset_is_skipped_naming_the_folders(moco_r50, moco_r18, tmp_path, monkeypatch):
    monkeypatch.setenv("MOCO_BENCH_DATASETS", str(tmp_path / "datasets"))
    cfg = load_evaluation(EVALUATE / "voc0712_frcnn_c4_24k.yaml")
    with pytest.raises(ConfigError, match="Res5ROIHeadsExtraNorm runs res5's bottleneck blocks .* a resnet18 has "
                                          "BasicBlocks"):  # refused before anything, whatever the data
        run_evaluation(moco_r18, cfg, out_root=tmp_path)
    record = run_evaluation(moco_r50[1], cfg, out_root=tmp_path)
    assert record["status"] == "skipped"
    assert str(tmp_path / "datasets" / "VOC2007") in record["error"] and "VOC2012" in record["error"]
    assert "JPEGImages" in record["error"]


def test_missing_detectron2_is_skipped_with_install_hint(tmp_path):
    """detectron2 made unimportable in a fresh interpreter: the record says skipped and how to install it."""
    code = (
        "import sys; sys.modules['detectron2'] = None\n"
        "import moco_bench.evaluators.detection.detection\n"
        "from moco_bench.evaluators.catalog import load_evaluation\n"
        "from moco_bench.convert import load_backbone\n"
        "from moco_bench.engine.runner import run_evaluation\n"
        f"cfg = load_evaluation({str(EVALUATE / 'coco_mrcnn_fpn_1x.yaml')!r})\n"
        f"r = run_evaluation(load_backbone('random:resnet18@0'), cfg, out_root={str(tmp_path)!r})\n"
        "print(r['status']); print(r['error'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    status, error = out.stdout.strip().splitlines()[-2:]
    assert status == "skipped" and "scripts/install_detectron2.py" in error


def test_checkpoint_failing_the_key_check(tmp_path, capsys):
    model = torchvision.models.resnet18()
    path = tmp_path / "checkpoint_0001.pth.tar"
    make_moco_checkpoint(model, path, arch="resnet18")
    ckpt = torch.load(path, weights_only=True)
    del ckpt["state_dict"]["module.encoder_q.layer3.0.conv1.weight"]
    torch.save(ckpt, path)
    config = str(EVALUATE / "demo" / "voc_detection_fpn.yaml")
    with pytest.raises(CheckpointError, match="layer3.0.conv1.weight"):
        evaluate_checkpoint(str(path), config, out_root=tmp_path)
    assert cli.main(["eval", str(path), "--config", config, "--out", str(tmp_path)]) == 2
    assert "layer3.0.conv1.weight" in capsys.readouterr().err
    assert not list(tmp_path.glob("*/*.json"))  # nothing recorded for a checkpoint that cannot be converted


def test_demo_configs_are_not_comparable():
    for path in sorted((EVALUATE / "demo").glob("*detection*.yaml")):
        cfg = load_evaluation(path)
        assert cfg.evaluator == "detectron2" and cfg.name.startswith("demo_"), path
        assert check_config(cfg)["comparable"] is False, path
        assert (REPO / cfg.d2_config).is_file()
