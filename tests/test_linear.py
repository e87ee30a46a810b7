"""Linear evaluation: main_lincls and the multi-layer heads end to end on the embedded ImageFolder, the
frozen-backbone check, multi-head == single heads, exact resume, and the bad-input errors."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from checkpoint_builders import DEMO_ARCH
from torch.utils.data import Subset

import moco_bench.evaluators.linear.linear as linear  # registers linear, mhead_linear, mhead_linear_fast
from moco_bench import evaluators
from moco_bench.convert import load_backbone
from moco_bench.convert.backbone import write_torchvision
from moco_bench.core.distributed import DistEnv
from moco_bench.core.errors import ConfigError, DataError
from moco_bench.data.transforms import eval_transform, linear_train_transform
from moco_bench.engine.runner import run_evaluation
from moco_bench.evaluators.base import EvalContext
from moco_bench.evaluators.catalog import load_evaluation
from moco_bench.evaluators.linear.heads import Heads
from moco_bench.evaluators.linear.train import BackboneChanged, LinearRun, TrainConfig, TrainingDiverged, train_heads
from moco_bench.models.taps import FeatureTaps
from moco_bench.results.store import load_results
from moco_bench.results.tables import compile_tables

EVALUATE = Path(__file__).resolve().parents[1] / "evaluate"
CPU = DistEnv(0, 1, 0, torch.device("cpu"))


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """A seeded random demo backbone written as a torchvision state-dict file and read back by the converter."""
    path = tmp_path_factory.mktemp("ckpt") / "small.pth"
    write_torchvision(load_backbone(f"random:{DEMO_ARCH}@0"), path)
    return load_backbone(path)


def demo(name: str, root: Path, *overrides: str):
    return load_evaluation(EVALUATE / "demo" / name, [f"data.root={root}", "optim.batch_size=64", *overrides])


def _run(backbone, cfg, out):
    record = run_evaluation(backbone, cfg, out_root=out, workers=0)
    assert record["status"] == "ok", record["error"]
    return record


def test_linear_end_to_end(backbone, imagefolder_root, tmp_path):
    cfg = demo("imagenet_linear.yaml", imagefolder_root, "schedule.epochs=2", "schedule.milestones=[1]")
    record = _run(backbone, cfg, tmp_path)
    m = record["metrics"]
    assert set(m) == {"top1", "top5", "top1_last", "top5_last"}
    assert all(0 <= v <= 100 for v in m.values()) and m["top5"] >= m["top1"] and m["top1"] >= m["top1_last"]
    assert record["details"]["frozen_check"] == "passed after epoch 1"
    lr = float(load_evaluation(EVALUATE / "demo" / "imagenet_linear.yaml").optim.lr)  # the demo's own lr
    assert [row["lr"] for row in record["details"]["history"]] == pytest.approx([lr, lr / 10])
    ev = record["evaluation"]
    assert ev["layer"] == "gap" and ev["comparable"] is False and ev["variant"] == ""
    work = next(tmp_path.glob("*/linear_demo"))
    assert (work / "checkpoint.pth.tar").is_file() and (work / "log.csv").read_text().count("\n") == 3
    tables = compile_tables(load_results(tmp_path))
    (table,) = tables.values()
    assert set(table["metric"]) == set(m) and set(table["layer"]) == {"gap"}


def test_mhead_end_to_end_and_fast_variant(backbone, imagefolder_root, tmp_path):
    _run(backbone, demo("imagenet_mhead_linear.yaml", imagefolder_root, "schedule.epochs=1"), tmp_path)
    fast = _run(backbone, demo("imagenet_mhead_linear_fast.yaml", imagefolder_root, "schedule.epochs=2"), tmp_path)
    expected = {f"feature{i}_{m}" for i in range(1, 6) for m in ("top1", "top5", "top1_last", "top5_last")}
    assert set(fast["metrics"]) == expected
    assert fast["evaluation"]["comparable"] is False and linear.FAST_VARIANT in fast["evaluation"]["variant"]
    assert set(fast["details"]["feature_cache"]["train"].values()) == {"miss"}
    tables = compile_tables(load_results(tmp_path))
    assert len(tables) == 2  # the fast variant never shares a table with the protocol
    for table in tables.values():
        assert set(table["metric"]) == expected
        assert set(table["layer"]) == {f"feature{i}" for i in range(1, 6)}


def _setup(backbone, root, *overrides, layers=("feature1", "feature2", "feature3", "feature4", "feature5")):
    """The demo multi-head pieces on a small subset: 32 train images (2 steps of 16), 16 val images."""
    cfg = demo("imagenet_mhead_linear.yaml", root, "optim.batch_size=16", "schedule.epochs=1", *overrides)
    train, val = linear.build_datasets(cfg)
    train, val = Subset(train, range(0, 200, 6)[:32]), Subset(val, range(0, 100, 6)[:16])
    ctx = EvalContext(out_dir=Path("unused"), cache_dir=Path("unused"), workers=0)
    run = linear.linear_run(backbone, cfg, ctx, CPU, train, val)
    taps = FeatureTaps(run.backbone, list(layers), linear.resolved(cfg)["features"]["pooling"])
    return cfg, run.backbone, run.reference, taps, run.heads, train, val


def _train(cfg, model, reference, extract, heads, train, val, out, **kw):
    return train_heads(LinearRun(extract=extract, heads=heads, backbone=model, reference=reference, train_set=train,
                                 val_set=val, tc=TrainConfig.from_config(cfg), num_classes=10, out_dir=out, env=CPU,
                                 workers=0, fingerprint="test", source="test", **kw))


def test_frozen_check_catches_a_changing_backbone(backbone, imagefolder_root, tmp_path):
    cfg, model, reference, _, _, train, val = _setup(backbone, imagefolder_root)
    heads = Heads({"gap": linear.linear_layer(256, 10, 0.01)})
    # The classic bug main_lincls guards against: the backbone in train mode, so BN running statistics move.
    with pytest.raises(BackboneChanged, match=r"after epoch 1: backbone tensor\(s\) bn1.running_mean"):
        _train(cfg, model, reference, lambda x: {"gap": model.train()(x)}, heads, train, val, tmp_path)


def test_multihead_equals_five_single_heads(backbone, imagefolder_root, tmp_path):
    cfg, model, reference, taps, heads, train, val = _setup(backbone, imagefolder_root)
    initial = copy.deepcopy(heads)
    multi = _train(cfg, model, reference, taps, heads, train, val, tmp_path / "multi")
    for name, head in initial.heads.items():
        single = Heads({name: head})
        alone = _train(cfg, model, reference, taps, single, train, val, tmp_path / name)
        for (key, a), b in zip(single.state_dict().items(), heads.heads[name].state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"{name}.{key}")
        row_multi, row_alone = multi["history"][0], alone["history"][0]
        assert row_alone[f"{name}_top1"] == row_multi[f"{name}_top1"]
        assert row_alone[f"{name}_loss"] == pytest.approx(row_multi[f"{name}_loss"], rel=1e-5)


def test_resume_continues_identically(backbone, imagefolder_root, tmp_path):
    cfg, model, reference, taps, heads, train, val = _setup(
        backbone, imagefolder_root, "schedule.epochs=2", "schedule.milestones=[1]", layers=("feature2", "feature5"))
    heads = Heads({k: heads.heads[k] for k in ("feature2", "feature5")})
    first, second = copy.deepcopy(heads), copy.deepcopy(heads)
    straight = _train(cfg, model, reference, taps, first, train, val, tmp_path / "straight")
    calls = []

    def interrupt(name):
        calls.append(name)
        if calls.count("train") == 2:
            raise KeyboardInterrupt  # killed while training epoch 2
        return contextlib.nullcontext()

    with pytest.raises(KeyboardInterrupt):
        _train(cfg, model, reference, taps, second, train, val, tmp_path / "resumed", stage=interrupt)
    fresh = copy.deepcopy(heads)  # a new process: heads at their initialization, state from the checkpoint
    resumed = _train(cfg, model, reference, taps, fresh, train, val, tmp_path / "resumed")
    assert resumed["resumed_from"] == 1 and resumed["frozen_check"] == "passed after epoch 2"
    assert resumed["history"] == straight["history"]
    for (key, a), b in zip(fresh.state_dict().items(), first.state_dict().values()):
        assert torch.equal(a, b), key


def test_nan_stops_with_epoch_and_step(backbone, imagefolder_root, tmp_path):
    cfg = demo("imagenet_linear.yaml", imagefolder_root, "optim.lr=1e38")
    ctx = EvalContext(out_dir=tmp_path, cache_dir=tmp_path, workers=0)
    message = (r"demo/imagenet_linear.yaml: the loss became (nan|inf) at epoch 1/\d, step [2-4]/4 \(lr 1e\+38\); "
               r"lower optim.lr")
    with pytest.raises(TrainingDiverged, match=message):
        evaluators.get("linear")(backbone, cfg, ctx)


def test_bad_input_errors(backbone, imagefolder_root, tmp_path):
    ctx = EvalContext(out_dir=tmp_path, cache_dir=tmp_path, workers=0)
    with pytest.raises(ConfigError, match=r"set up for resnet50, but .*small.pth holds a resnet18_small_w0.5 "):
        evaluators.get("linear")(backbone, demo("imagenet_linear.yaml", imagefolder_root, "arch=resnet50"), ctx)
    with pytest.raises(DataError, match=r"imagefolder, split train_subset\): has 10 classes, the config expects 7"):
        cfg = demo("imagenet_mhead_linear.yaml", imagefolder_root, "data.classes=7")
        evaluators.get("mhead_linear")(backbone, cfg, ctx)


def test_shipped_configs(monkeypatch):
    """Every linear config loads, names a registered evaluator and builds its transforms and optimizer numbers;
    the protocol pooling gives the published ~9k dims on ResNet-50 at 224 px."""
    monkeypatch.setenv("MOCO_BENCH_DATASETS", "/datasets")
    paths = sorted(EVALUATE.glob("*linear*.yaml")) + sorted((EVALUATE / "demo").glob("*linear*.yaml"))
    assert {p.relative_to(EVALUATE).as_posix() for p in paths} >= {
        "imagenet_linear.yaml", "imagenet_mhead_linear.yaml", "imagenet_mhead_linear_vissl.yaml",
        "imagenet_mhead_linear_fast.yaml", "places205_mhead_linear.yaml", "inat18_linear.yaml",
        "demo/imagenet_linear.yaml", "demo/imagenet_mhead_linear.yaml", "demo/imagenet_mhead_linear_vissl.yaml",
        "demo/imagenet_mhead_linear_fast.yaml", "demo/places205_mhead_linear.yaml"}
    for path in paths:
        cfg = load_evaluation(path)
        assert callable(evaluators.get(cfg.evaluator)) and cfg.name
        tc = TrainConfig.from_config(cfg)
        assert tc.epochs >= max(tc.milestones) and tc.lr > 0  # mmselfsup 0.x steps at 90 of 90 epochs: no effect
        t = cfg.transform
        linear_train_transform(t.train, t.mean, t.std), eval_transform(t.test, t.mean, t.std)
    vissl = load_evaluation(EVALUATE / "imagenet_mhead_linear_vissl.yaml", ["optim.batch_size=512"])
    vissl = TrainConfig.from_config(vissl)
    assert vissl.lr == pytest.approx(0.02)  # 0.01 per 256 images
    cfg = load_evaluation(EVALUATE / "imagenet_mhead_linear.yaml")
    taps = FeatureTaps(load_backbone("random:resnet50").build_model(), list(cfg.features.layers),
                       linear.resolved(cfg)["features"]["pooling"])
    assert taps.dims(224) == {"feature1": 9216, "feature2": 9216, "feature3": 8192, "feature4": 9216,
                              "feature5": 8192}


DDP_DRIVER = """
import json, os, sys
from pathlib import Path
from moco_bench.evaluators.catalog import load_evaluation
from moco_bench.convert import load_backbone
from moco_bench import evaluators
from moco_bench.evaluators.base import EvalContext
ckpt, config, root, out = sys.argv[1:5]
cfg = load_evaluation(config, [f"data.root={root}", "optim.batch_size=64", "schedule.epochs=1"])
ctx = EvalContext(out_dir=Path(out), cache_dir=Path(out), workers=0)
result = evaluators.get(cfg.evaluator)(load_backbone(ckpt), cfg, ctx)
Path(out, f"rank{os.environ['RANK']}.json").write_text(json.dumps({"metrics": result.metrics,
                                                                    "details": result.details}))
"""


def test_two_process_gloo(backbone, imagefolder_root, tmp_path):
    """torchrun with 2 CPU processes: DistributedSampler, DDP heads, all-reduced losses and accuracies."""
    (tmp_path / "driver.py").write_text(DDP_DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(tmp_path / "driver.py"), backbone.path, str(EVALUATE / "demo" / "imagenet_mhead_linear.yaml"),
           str(imagefolder_root), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["metrics"] == ranks[1]["metrics"] and len(ranks[0]["metrics"]) == 20
    details = ranks[0]["details"]
    assert details["world_size"] == 2 and details["batch_per_rank"] == 32
    assert details["frozen_check"] == "passed after epoch 1" and (tmp_path / "checkpoint.pth.tar").is_file()
