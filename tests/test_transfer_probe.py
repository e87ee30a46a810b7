"""The fast probe grid: heads trained together take exactly the steps each would take alone; the head is chosen
on the held-out part of train, so relabelling the test split changes no choice; the result is its own protocol."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from moco_bench import evaluators
from moco_bench.convert import load_backbone
from moco_bench.engine.runner import check_config
from moco_bench.evaluators.base import EvalContext
from moco_bench.evaluators.catalog import load_evaluation
from moco_bench.evaluators.transfer.probe import HeadGrid

DEMO = Path(__file__).resolve().parents[1] / "evaluate" / "demo" / "imagenet_probe_grid.yaml"


def test_heads_trained_together_equal_heads_trained_alone():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(64, 8)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 3, 64))
    lrs = [0.05, 0.5, 2.0]
    grid = HeadGrid(8, 3, lrs, "cpu", torch.Generator().manual_seed(0))
    alone = []
    for j, lr in enumerate(lrs):
        head = HeadGrid(8, 3, [lr], "cpu", torch.Generator().manual_seed(1))
        head.w, head.b = grid.w[j:j + 1].clone(), grid.b[j:j + 1].clone()
        alone.append(head)
    for step in range(5):
        batch = slice(16 * (step % 4), 16 * (step % 4) + 16)
        grid.step(x[batch], y[batch], 0.9 ** step, 0.9, 1e-4)
        for head in alone:
            head.step(x[batch], y[batch], 0.9 ** step, 0.9, 1e-4)
    for j, head in enumerate(alone):
        torch.testing.assert_close(grid.w[j], head.w[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grid.b[j], head.b[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(grid.w[0], grid.w[2])  # the learning rates made a difference


def _probe(root: Path, tmp_path: Path):
    cfg = load_evaluation(DEMO, [f"data.root={root}", "data.train_split=train", "grid.epochs=3",
                                 "grid.holdout_fraction=0.25", "features.batch_size=100"])
    ctx = EvalContext(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", workers=0)
    return evaluators.get("probe_grid")(load_backbone("random:resnet18_small_w0.5"), cfg, ctx)


def test_head_is_chosen_on_held_out_train_and_test_labels_change_no_choice(imagefolder_root, tmp_path):
    clean = _probe(imagefolder_root, tmp_path / "a")
    table = clean.details["holdout_top1"]
    assert len(table) == clean.details["heads"] == 2 * 13
    chosen = clean.details["chosen"]
    assert table[f"{chosen['layer']} lr{chosen['lr']:g}"] == max(table.values())
    assert clean.details["images"] == {"fit": 150, "holdout": 50}  # 0.25 of the 200 train images
    assert 0 <= clean.metrics["top1"] <= 100
    moved = tmp_path / "relabelled"
    shutil.copytree(imagefolder_root, moved)
    names = sorted(p.name for p in (moved / "val").iterdir())
    for i, name in enumerate(names):  # every val image under the next class's name
        (moved / "val" / name).rename(moved / "val" / f"tmp{i}")
    for i in range(len(names)):
        (moved / "val" / f"tmp{i}").rename(moved / "val" / names[(i + 1) % len(names)])
    corrupt = _probe(moved, tmp_path / "b")
    assert corrupt.details["chosen"] == chosen and corrupt.details["holdout_top1"] == table


def test_probe_grid_is_its_own_protocol():
    cfg = load_evaluation(DEMO.parents[1] / "imagenet_probe_grid.yaml")
    assessment = check_config(cfg)
    assert cfg.benchmark != "imagenet_linear" and assessment["published_protocol"] is None
