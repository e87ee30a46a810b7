"""How pretraining steps compute: bf16 autocast against fp32 within a stated tolerance, fp16 with its gradient
scaler through a checkpoint and back, channels_last, and the recipe record that labels every such run."""

from __future__ import annotations

import copy

import pytest
import torch
from test_pretrain import load, make_imagefolder, tiny_config

from moco_bench.convert import load_backbone
from moco_bench.core.distributed import DistEnv
from moco_bench.pretrain.compute import step_compute
from moco_bench.pretrain.data import build_dataset
from moco_bench.pretrain.recipe import recipe_record
from moco_bench.pretrain.train import build_training, pretrain


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("imagefolder"), per_class=16)


def _one_step(cfg, moco, images):
    """Loss and the query encoder's gradient after one step of ``moco`` (a copy: the step moves the queue)."""
    moco = copy.deepcopy(moco)
    compute = step_compute(cfg, torch.device("cpu"))
    im_q, im_k = compute.inputs(images, torch.device("cpu"))
    if compute.channels_last:
        moco.to(memory_format=torch.channels_last)
    torch.manual_seed(1)  # the same shuffle of the batch for the key encoder's BN
    with compute.autocast(torch.device("cpu")):
        logits, labels = moco(im_q, im_k)
        loss = torch.nn.functional.cross_entropy(logits, labels)
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in moco.encoder_q.parameters() if p.grad is not None])
    return loss.item(), grad


def test_bf16_and_channels_last_steps_against_fp32(data, tmp_path):
    """bf16 autocast keeps 8 bits of mantissa: on one step of a random-init ResNet-18 over 32 augmented pairs the
    loss stays within 2% of fp32's and the query encoder's gradient within cosine 0.85 of it (measured: 0.6-1.1% and
    0.92; the logits themselves are fp32). channels_last is the same arithmetic summed in another order: equal to
    round-off."""
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    pil = ("data.pipeline=pil", "data.batch_size=32", "model.bn_splits=1")  # PIL pairs, stacked once for all three
    base = tiny_config(data, tmp_path / "x", *pil)
    pairs = [build_dataset(base)[i][0] for i in range(32)]
    images = [torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])]
    torch.manual_seed(0)
    moco = build_training(base, env)[0]
    loss32, grad32 = _one_step(base, moco, images)
    bf16 = tiny_config(data, tmp_path / "x", *pil, "compute.precision=bf16")
    loss16, grad16 = _one_step(bf16, moco, images)
    assert abs(loss16 - loss32) / loss32 < 0.02
    assert torch.nn.functional.cosine_similarity(grad16, grad32, dim=0) > 0.85
    assert not torch.equal(grad16, grad32)  # autocast did run in bf16
    channels_last = tiny_config(data, tmp_path / "x", *pil, "compute.channels_last=true")
    loss_cl, grad_cl = _one_step(channels_last, moco, images)
    assert loss_cl == pytest.approx(loss32, rel=1e-5)
    assert torch.nn.functional.cosine_similarity(grad_cl, grad32, dim=0) > 0.9999  # other conv kernels, same sums


def test_fp16_run_keeps_its_scaler_and_says_it_left_the_recipe(data, tmp_path):
    fp16 = ("compute.precision=fp16", "monitor.knn_every=0")
    last = pretrain(tiny_config(data, tmp_path / "straight", *fp16))
    ckpt = load(last)
    assert ckpt["scaler"]["scale"] > 0 and "_growth_tracker" in ckpt["scaler"]
    recipe = ckpt["config"]["recipe"]
    assert recipe["protocol"] == "mocov2_demo_fmnist" and recipe["method"] == "MoCo v2"
    assert recipe["deviations"]["compute.precision"] == {"protocol": "fp32", "run": "fp16"}
    assert recipe["deviations"]["model.K"] == {"protocol": 4096, "run": 32}
    assert not any(k.startswith(("data.root", "output_dir", "monitor", "cpu_threads")) for k in recipe["deviations"])
    assert (tmp_path / "straight" / "config.yaml").read_text().count("deviations:") == 1
    assert load_backbone(last).recipe["deviations"] == recipe["deviations"]
    first = tmp_path / "straight" / "checkpoint_0000.pth.tar"
    resumed = load(pretrain(tiny_config(data, tmp_path / "resumed", *fp16, f"resume={first}")))
    assert resumed["scaler"] == ckpt["scaler"]  # the scale and its growth tracker continue across the resume
    assert all(torch.equal(v, resumed["state_dict"][k]) for k, v in ckpt["state_dict"].items())


def test_tensor_pipeline_trains_and_another_pipeline_is_a_deviation(data, tmp_path):
    """data.pipeline tensor: the loader yields file bytes, the step decodes and augments them image by image on
    the device. The demo recipe's is batched, so tensor and PIL are changes of that recipe, recorded as such."""
    last = pretrain(tiny_config(data, tmp_path / "tensor", "data.pipeline=tensor", "optim.epochs=1",
                                "monitor.knn_every=0"))
    ckpt = load(last)
    assert ckpt["epoch"] == 1 and int(ckpt["state_dict"]["module.queue_ptr"]) == (4 * 8) % 32  # 4 steps of 8
    config = ckpt["config"]
    assert config["data"]["pipeline"] == "tensor"
    assert config["recipe"]["deviations"]["data.pipeline"] == {"protocol": "batched", "run": "tensor"}
    pil = recipe_record(tiny_config(data, tmp_path / "pil", "data.pipeline=pil"))
    assert pil["deviations"]["data.pipeline"] == {"protocol": "batched", "run": "pil"}


@pytest.mark.parametrize("workers", [0, 1])
def test_batched_pipeline_trains_and_a_resumed_run_replays_it(data, tmp_path, workers):
    """data.pipeline batched (the demo recipe's): with a loader worker on the CPU the worker makes both views of
    a batch (CollateTwoCrops), without one the step does; either way the views come from torch's RNG, so a run
    resumed after its first epoch ends with the straight run's weights, and nothing is a deviation."""
    if workers:
        assert step_compute(tiny_config(data, tmp_path / "c", "data.workers=1"), torch.device("cpu")).augment is None
    extra = (f"data.workers={workers}", "monitor.knn_every=0")
    straight = load(pretrain(tiny_config(data, tmp_path / "straight", *extra)))
    assert straight["config"]["data"]["pipeline"] == "batched"
    assert "data.pipeline" not in straight["config"]["recipe"]["deviations"]
    first = tmp_path / "straight" / "checkpoint_0000.pth.tar"
    resumed = load(pretrain(tiny_config(data, tmp_path / "resumed", *extra, f"resume={first}")))
    assert all(torch.equal(v, resumed["state_dict"][k]) for k, v in straight["state_dict"].items())
    assert not all(torch.equal(v, load(first)["state_dict"][k]) for k, v in straight["state_dict"].items())
