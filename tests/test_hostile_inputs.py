"""Hostile inputs: nothing in a config or a name runs code, and bad values are refused before any work."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest
import torch
import torchvision
from checkpoint_builders import make_moco_checkpoint

from moco_bench.convert import load_backbone
from moco_bench.core.errors import ConfigError
from moco_bench.core.launch import DistributedJob, job_script_value, submit
from moco_bench.evaluators.catalog import load_evaluation
from moco_bench.pretrain import cli as pretrain_cli

REPO = Path(__file__).resolve().parents[1]
needs_d2 = pytest.mark.skipif(importlib.util.find_spec("detectron2") is None, reason="detectron2 is not installed")


def _evil_yaml(marker: Path) -> str:
    return f"MODEL:\n  WEIGHTS: !!python/object/apply:os.system [\"touch {marker}\"]\n"


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    torch.manual_seed(0)
    path = make_moco_checkpoint(torchvision.models.resnet18(), tmp_path_factory.mktemp("ck") / "c.pth.tar").path
    return load_backbone(path)


@needs_d2
@pytest.mark.parametrize("via", ["file", "base", "override"])
def test_detectron2_yaml_with_python_tags_is_refused_and_runs_nothing(via, r18, tmp_path):
    from moco_bench.evaluators.detection.detection import build_d2_config

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(_evil_yaml(marker))
    d2_config = evil
    if via == "base":  # the tag hides in a _BASE_ the named file inherits from
        d2_config = tmp_path / "child.yaml"
        d2_config.write_text(f'_BASE_: "{evil.name}"\nSOLVER:\n  MAX_ITER: 2\n')
    config = REPO / "evaluate" / "voc0712_frcnn_c4_24k.yaml"
    if via == "file":  # a crafted evaluation config naming the file, rather than an override of a shipped one
        crafted = tmp_path / "crafted.yaml"
        crafted.write_text(f"base: {config}\nd2_config: {evil}\n")
        cfg = load_evaluation(crafted)
    else:
        cfg = load_evaluation(config, [f"d2_config={d2_config}"])
    with pytest.raises(ConfigError, match="not plain YAML.*nothing was run"):
        build_d2_config(r18, cfg, tmp_path / "out", tmp_path / "w.pkl", "cpu", 1)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["demo\ntouch MARKER", "a;touch MARKER", "$(touch MARKER)", "a b", ""])
def test_job_names_that_could_inject_a_line_are_rejected(name, tmp_path):
    marker = tmp_path / "MARKER"
    with pytest.raises(ConfigError, match="cannot go into a SLURM job script"):
        submit(DistributedJob(print), folder=tmp_path / "jobs", name=name.replace("MARKER", str(marker)),
               cluster="local")
    assert not marker.exists() and not (tmp_path / "jobs").exists()


def test_pretrain_recipe_name_with_a_newline_never_reaches_sbatch(tmp_path):
    """The attack of the issue: a recipe ``name`` with a newline and a command, sent with --launcher slurm."""
    marker = tmp_path / "MARKER"
    parser = argparse.ArgumentParser()
    pretrain_cli.register(parser.add_subparsers())
    args = parser.parse_args([
        "pretrain", "--config", str(REPO / "pretrain" / "mocov2_demo_fmnist.yaml"), f"output_dir={tmp_path / 'o'}",
        f"name='x\ntouch {marker}'", "--launcher", "slurm", "--slurm-cluster", "local", "--gpus-per-node", "0",
        "--job-dir", str(tmp_path / "jobs")])
    with pytest.raises(ConfigError, match=r"name: .* does not match"):  # refused by the recipe's schema, at load
        args.func(args)
    assert not marker.exists() and not (tmp_path / "jobs").exists()


def test_safe_job_values_pass_unchanged():
    assert job_script_value("job name", "mocov2_r50-in1k.200ep") == "mocov2_r50-in1k.200ep"
    assert job_script_value("job folder", "/scratch/u/runs/x_1", path=True) == "/scratch/u/runs/x_1"
    with pytest.raises(ConfigError):
        job_script_value("job folder", "/scratch/u/runs\n#SBATCH --x", path=True)
