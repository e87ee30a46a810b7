"""The pretraining loop: recipes, checkpoints in the official layout, exact resume, bad input, 2 gloo ranks, SLURM."""

from __future__ import annotations

import argparse
import csv
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from moco_bench.core.config import resolved
from moco_bench.core.errors import CheckpointError, ConfigError, DataError, ResultExistsError, TrainingDiverged
from moco_bench.core.launch import submit
from moco_bench.data.transforms import PILGaussianBlur
from moco_bench.pretrain import cli
from moco_bench.pretrain.checkpoint import latest_checkpoint
from moco_bench.pretrain.job import PretrainJob
from moco_bench.pretrain.schema import load_recipe
from moco_bench.pretrain.train import check_config, lr_factor, pretrain

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "pretrain").glob("*.yaml"))
DEMO = ROOT / "pretrain" / "mocov2_demo_fmnist.yaml"


def make_imagefolder(root: Path, classes: int = 2, per_class: int = 8, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8) // (c + 1)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def tiny_overrides(data: Path, out: Path, *extra: str) -> list:
    """The demo recipe shrunk: its small-image ResNet-18 (resnet18_small_w0.5), K 32, dim 16, batch 8 (2 steps per
    epoch), 32 px."""
    return [f"data.root={data}", f"monitor.data.root={data}", "monitor.data.classes=2", f"output_dir={out}",
            "data.batch_size=8", "data.workers=0", "model.K=32", "model.dim=16", "model.bn_splits=2",
            "optim.epochs=2", "monitor.knn_every=1", "monitor.k=3", "monitor.batch_size=16", "log.every=1",
            "cpu_threads=1", *extra]


def tiny_config(data: Path, out: Path, *extra: str):
    return load_recipe(DEMO, tiny_overrides(data, out, *extra))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("imagefolder"))


@pytest.fixture(scope="module")
def run_a(data, tmp_path_factory):
    """A finished two-epoch run (its checkpoints are shared by the tests below)."""
    out = tmp_path_factory.mktemp("run") / "a"
    torch.set_num_threads(1)
    last = pretrain(tiny_config(data, out))
    assert last == out / "checkpoint_0001.pth.tar"
    return out


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_recipes_load_and_hold_the_published_numbers():
    names = {p.stem for p in RECIPES}
    assert {"mocov1_r50_in1k_200ep", "mocov2_r50_in1k_200ep", "mocov2_r50_in1k_800ep", "mocov2_demo_fmnist"} <= names
    for path in RECIPES:
        cfg = load_recipe(path)
        check_config(cfg, world_size=1)
        assert cfg.name == path.stem
    v1 = load_recipe(ROOT / "pretrain/mocov1_r50_in1k_200ep.yaml")
    v2 = load_recipe(ROOT / "pretrain/mocov2_r50_in1k_200ep.yaml")
    v2_800 = load_recipe(ROOT / "pretrain/mocov2_r50_in1k_800ep.yaml")
    for cfg in (v1, v2, v2_800):
        check_config(cfg, world_size=8)  # 256 over 8 GPUs, as the reference
        assert (cfg.model.arch, cfg.model.dim, cfg.model.K, cfg.model.m) == ("resnet50", 128, 65536, 0.999)
        assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.data.batch_size) == (0.03, 0.9, 1e-4, 256)
    assert (v1.model.T, v1.model.mlp, v1.transform.kind, v1.optim.schedule) == (0.07, False, "moco_v1", "step")
    assert list(v1.optim.milestones) == [120, 160] and v1.optim.epochs == 200
    assert (v2.model.T, v2.model.mlp, v2.transform.kind, v2.optim.schedule) == (0.2, True, "moco_v2", "cos")
    assert v2.optim.epochs == 200 and v2_800.optim.epochs == 800
    t = v2.transform
    assert (list(t.blur_sigma), t.blur_p, list(t.scale)) == ([0.1, 2.0], 0.5, [0.2, 1.0])
    demo = load_recipe(DEMO)
    assert demo.data.root.endswith("embedded/imagefolder") and demo.data.split == "train"


def test_lr_schedules_follow_main_moco():
    cos = dict(schedule="cos", epochs=200, milestones=[120, 160])
    assert lr_factor(0, **cos) == 1.0
    assert lr_factor(100, **cos) == pytest.approx(0.5)
    assert lr_factor(150, **cos) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)))
    step = dict(schedule="step", epochs=200, milestones=[120, 160])
    assert [lr_factor(e, **step) for e in (0, 119, 120, 159, 160, 199)] == pytest.approx([1, 1, .1, .1, .01, .01])


def test_checkpoints_have_the_official_layout_and_convert(run_a):
    names = sorted(p.name for p in run_a.glob("checkpoint_*"))
    assert names == ["checkpoint_0000.pth.tar", "checkpoint_0001.pth.tar"]
    ckpt = load(run_a / "checkpoint_0000.pth.tar")
    assert {"epoch", "arch", "state_dict", "optimizer"} <= set(ckpt)
    assert ckpt["epoch"] == 1 and ckpt["arch"] == "resnet18_small_w0.5"
    keys = set(ckpt["state_dict"])
    assert {"module.queue", "module.queue_ptr"} <= keys
    assert {k.split(".")[1] for k in keys} == {"encoder_q", "encoder_k", "queue", "queue_ptr"}
    assert all(k.startswith("module.") for k in keys)
    assert ckpt["state_dict"]["module.queue"].shape == (16, 32)
    # main_moco.py saves the optimizer as the epoch left it: its lr is that epoch's (cosine over 2 epochs)
    lrs = [load(run_a / n)["optimizer"]["param_groups"][0]["lr"] for n in names]
    assert lrs == pytest.approx([0.06, 0.03])
    assert int(ckpt["state_dict"]["module.queue_ptr"]) == (2 * 8) % 32

    from moco_bench.convert import load_backbone  # the converter reads our checkpoints as official MoCo ones

    backbone = load_backbone(run_a / "checkpoint_0001.pth.tar")
    assert backbone.arch == "resnet18_small_w0.5" and backbone.epoch == 2
    assert "the checkpoint's arch field" in backbone.report.arch_note
    backbone.build_model()  # strict: every tensor of the suite's network, no other
    state = load(run_a / "checkpoint_0001.pth.tar")["state_dict"]
    q = {k.removeprefix("module.encoder_q."): v for k, v in state.items()
         if k.startswith("module.encoder_q.") and ".fc." not in k}
    assert set(backbone.state_dict) == set(q)
    assert all(torch.equal(backbone.state_dict[k], q[k]) for k in q)


def test_logs_csv_and_tensorboard(run_a):
    with open(run_a / "train.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]
    assert all(math.isfinite(float(r["loss"])) and float(r["images_per_s"]) > 0 for r in rows)
    assert [float(r["lr"]) for r in rows[::2]] == pytest.approx([0.06, 0.03])  # cosine over 2 epochs
    with open(run_a / "knn.csv") as f:
        knn = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in knn] == [0, 1] and all(0 <= float(r["top1"]) <= 100 for r in knn)
    assert list((run_a / "tb").glob("events.out.tfevents.*"))
    assert (run_a / "config.yaml").is_file()


def test_resumed_run_continues_with_identical_state(run_a, data, tmp_path):
    """Resuming from epoch 1's checkpoint (all an interrupted run leaves) ends exactly where the straight run did."""
    out = tmp_path / "b"
    pretrain(tiny_config(data, out, f"resume={run_a / 'checkpoint_0000.pth.tar'}"))
    straight, resumed = load(run_a / "checkpoint_0001.pth.tar"), load(out / "checkpoint_0001.pth.tar")
    assert not (out / "checkpoint_0000.pth.tar").exists()
    assert straight["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in straight["state_dict"].items():  # both encoders, queue and pointer
        assert torch.equal(value, resumed["state_dict"][key]), key
    for a, b in zip(straight["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert straight["scheduler"] == resumed["scheduler"]
    assert torch.equal(straight["rng"][0]["torch"], resumed["rng"][0]["torch"])


def test_auto_resume_skips_a_truncated_last_checkpoint_and_sweeps_temporaries(run_a, data, tmp_path, caplog):
    """A crash mid-write left checkpoint_0001 truncated and a temporary: resume=auto names the bad file, resumes
    from checkpoint_0000, writes a good checkpoint_0001 (equal to the straight run's) and removes the temporary."""
    out = tmp_path / "crashed"
    shutil.copytree(run_a, out)
    last = out / "checkpoint_0001.pth.tar"
    last.write_bytes(last.read_bytes()[:1000])
    (out / ".checkpoint_0001.pth.tar.k2j4.tmp").write_bytes(b"partial")
    with caplog.at_level(logging.WARNING):
        assert pretrain(tiny_config(data, out, "resume=auto")) == last
    assert "checkpoint_0001.pth.tar: not a readable checkpoint" in caplog.text
    assert not list(out.glob("*.tmp"))
    straight, redone = load(run_a / "checkpoint_0001.pth.tar"), load(last)
    assert all(torch.equal(v, redone["state_dict"][k]) for k, v in straight["state_dict"].items())
    (out / "checkpoint_0000.pth.tar").write_bytes(b"junk")
    last.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="none of its 2 checkpoints reads"):
        pretrain(tiny_config(data, out, "resume=auto"))


def test_keep_checkpoints_prunes_only_older_epochs(run_a, data, tmp_path):
    out = tmp_path / "keep"
    last = pretrain(tiny_config(data, out, f"resume={run_a / 'checkpoint_0000.pth.tar'}", "optim.epochs=4",
                                "keep_checkpoints=2", "monitor.knn_every=0"))
    assert sorted(p.name for p in out.glob("*.pth.tar")) == ["checkpoint_0002.pth.tar", "checkpoint_0003.pth.tar"]
    assert last == out / "checkpoint_0003.pth.tar" and load(last)["epoch"] == 4
    with pytest.raises(ConfigError, match="keep_checkpoints: 0 is below its minimum 1"):  # refused at load
        pretrain(tiny_config(data, tmp_path / "keep0", "keep_checkpoints=0"))


def test_v2_blur_draws_from_torch_rng_so_a_resumed_run_replays_it():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    blur = PILGaussianBlur((1.0, 2.0))
    torch.manual_seed(3)
    first = np.asarray(blur(image))
    torch.manual_seed(3)
    assert np.array_equal(first, np.asarray(blur(image)))
    assert first.std() < 0.5 * np.asarray(image).std()  # blurred noise


def test_auto_resume_and_refusal_to_overwrite(run_a, data):
    assert latest_checkpoint(run_a).name == "checkpoint_0001.pth.tar"
    with pytest.raises(ResultExistsError, match="resume=auto"):
        pretrain(tiny_config(data, run_a, "resume=null"))
    assert pretrain(tiny_config(data, run_a, "resume=auto")) == run_a / "checkpoint_0001.pth.tar"  # nothing left


def test_bad_input_fails_before_training(run_a, data, tmp_path):
    with pytest.raises(ConfigError, match="model.K=36 must be a multiple of the global batch"):
        pretrain(tiny_config(data, tmp_path / "k", "model.K=36"))
    assert not (tmp_path / "k").exists()
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=str(empty / "train")):
        pretrain(tiny_config(empty, tmp_path / "e"))
    with pytest.raises(DataError, match="fewer than one global batch"):
        pretrain(tiny_config(data, tmp_path / "b", "data.batch_size=32", "model.K=64"))
    bad = make_imagefolder(tmp_path / "bad", classes=1, per_class=8)
    (bad / "train" / "class0" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="0.png"):
        pretrain(tiny_config(bad, tmp_path / "u"))
    ckpt = run_a / "checkpoint_0000.pth.tar"
    with pytest.raises(ConfigError, match=r"is a resnet18_small_w0.5, the config asks for model.arch=resnet34"):
        pretrain(tiny_config(data, tmp_path / "r", f"resume={ckpt}", "model.arch=resnet34"))
    with pytest.raises(ConfigError, match=r"queue of shape \(16, 32\)"):
        pretrain(tiny_config(data, tmp_path / "q", f"resume={ckpt}", "model.K=64"))
    with pytest.raises(CheckpointError, match="not found"):
        pretrain(tiny_config(data, tmp_path / "m", f"resume={tmp_path / 'missing.pth.tar'}"))


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(run_a, data, tmp_path):
    # a NaN in the resumed weights makes the first loss NaN (a config can no longer hold one: numbers are finite)
    last_good = run_a / "checkpoint_0000.pth.tar"
    poisoned = load(last_good)
    poisoned["state_dict"]["module.encoder_q.conv1.weight"][0, 0, 0, 0] = float("nan")
    bad = tmp_path / "poisoned.pth.tar"
    torch.save(poisoned, bad)
    with pytest.raises(TrainingDiverged, match=rf"loss is nan at epoch 1, step 0 .*{bad}"):
        pretrain(tiny_config(data, tmp_path / "nan", f"resume={bad}"))
    assert latest_checkpoint(tmp_path / "nan") is None
    assert load(last_good)["epoch"] == 1
    # an lr of 1e38 sends the weights to infinity at the first update: the next loss is NaN
    with pytest.raises(TrainingDiverged, match="loss is nan at epoch 0, step 1 .*no checkpoint yet"):
        pretrain(tiny_config(data, tmp_path / "nan0", "optim.lr=1e38"))


def test_resume_with_other_numbers_is_refused(run_a, data, tmp_path):
    """The optimizer and schedule come back from the checkpoint: a changed lr would be recorded, never used."""
    with pytest.raises(ConfigError, match=r"resuming continues the run that wrote it, but this config changes "
                                          r"optim.lr 0.06 -> 1e\+38"):
        pretrain(tiny_config(data, tmp_path / "r", f"resume={run_a / 'checkpoint_0000.pth.tar'}", "optim.lr=1e38"))


def test_two_processes_train_together_as_a_submitit_job(data, tmp_path):
    """Two gloo ranks, started by submitit's local executor: the SLURM path's environment export and DDP."""
    out = tmp_path / "ddp"
    cfg = resolved(tiny_config(data, out, "optim.epochs=1", "monitor.knn_every=0"))
    job = submit(PretrainJob(cfg), folder=tmp_path / "jobs", tasks_per_node=2, cluster="local", timeout_min=5)
    assert job.results() == [out / "checkpoint_0000.pth.tar", None]  # rank 0 writes the checkpoints
    ckpt = load(out / "checkpoint_0000.pth.tar")
    assert len(ckpt["rng"]) == 2  # each rank's random streams, for an exact resume with 2 processes
    assert int(ckpt["state_dict"]["module.queue_ptr"]) == 16  # 2 steps x global batch 8 (4 per rank)


def test_pretrain_job_in_debug_executor_and_its_requeue_resumes(data, tmp_path):
    out = tmp_path / "job"
    cfg = resolved(tiny_config(data, out, "optim.epochs=1", "monitor.knn_every=0"))
    job = submit(PretrainJob(cfg), folder=tmp_path / "jobs", cluster="debug")
    assert job.result() == out / "checkpoint_0000.pth.tar"
    requeued = PretrainJob(cfg).checkpoint()
    assert requeued.function.args[0]["resume"] == str(out / "checkpoint_0000.pth.tar")


def test_cli_runs_the_recipe_with_overrides(data, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    overrides = tiny_overrides(data, tmp_path / "cli", "optim.epochs=1")
    args = parser.parse_args(["pretrain", "--config", str(DEMO), *overrides])
    assert args.func(args) == 0
    assert "last checkpoint" in capsys.readouterr().out
    assert (tmp_path / "cli" / "checkpoint_0000.pth.tar").is_file()


def test_cli_slurm_launcher_checks_before_submitting(data, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    overrides = tiny_overrides(data, tmp_path / "slurm", "optim.epochs=1")
    slurm = ["--launcher", "slurm", "--slurm-cluster", "debug", "--job-dir", str(tmp_path / "jobs")]
    bad = parser.parse_args(["pretrain", "--config", str(DEMO), *overrides, *slurm, "--nodes", "3",
                             "--gpus-per-node", "1"])
    with pytest.raises(ConfigError, match="does not split over 3 processes"):
        bad.func(bad)
    assert not (tmp_path / "jobs").exists()
    ok = parser.parse_args(["pretrain", "--config", str(DEMO), *overrides, *slurm, "--gpus-per-node", "0"])
    assert ok.func(ok) == 0
    assert "submitted job" in capsys.readouterr().out
