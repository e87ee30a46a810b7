"""What an evaluation leaves for the report: the checkpoint's label in its record (``--label``), and per-example
outputs beside it, in the test set's order also when several processes shared the test set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from moco_bench.cli import main
from moco_bench.core.distributed import DistEnv
from moco_bench.evaluators.linear.train import _in_val_order
from moco_bench.results import stats
from moco_bench.results.examples import load_examples, sidecar

ROOT = Path(__file__).resolve().parents[1]
KNN = ROOT / "evaluate" / "demo" / "imagenet_knn.yaml"


def _eval(tmp_path, root, *extra) -> int:
    return main(["eval", "random:resnet18_small_w0.5", "--config", str(KNN), "--out", str(tmp_path / "runs"),
                 "--device", "cpu", "--workers", "0", f"data.root={root}", "knn.k=[5,10]", *extra])


def test_label_is_stored_in_the_record_and_examples_beside_it(imagefolder_root, tmp_path):
    assert _eval(tmp_path, imagefolder_root, "--label", "random init (test)") == 0
    (path,) = (tmp_path / "runs").glob("*/knn_demo.json")
    rec = json.loads(path.read_text())
    assert rec["checkpoint"]["label"] == "random init (test)"
    examples = load_examples(path, rec["examples"])
    assert set(examples) == {"top1@k5", "top1@k10"} and rec["examples"]["file"] == sidecar(path).name
    for metric, ex in examples.items():
        assert ex.n == 100 and stats.statistic(ex)(np.arange(ex.n)) == pytest.approx(rec["metrics"][metric])


@pytest.mark.parametrize("label", ["", " padded", "two\nlines", "x" * 61])
def test_a_label_that_cannot_head_a_column_is_refused_before_any_work(label, imagefolder_root, tmp_path, capsys):
    assert _eval(tmp_path, imagefolder_root, "--label", label) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"moco-bench: error: --label {label!r}: give 1 to 60 printable characters")
    assert len(err.splitlines()) == 1 and not (tmp_path / "runs").exists()


def _gather(rank: int, world: int, init: str, n: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        full = np.arange(n) % 3 == 0  # the val set's hits, known to every rank here
        local = torch.from_numpy(full[rank::world].astype(np.uint8))  # what rank r evaluated (_loaders' Subset)
        got = _in_val_order(local, DistEnv(rank, world, rank, torch.device("cpu")))
        np.save(Path(out) / f"rank{rank}.npy", got)
    finally:
        dist.destroy_process_group()


def test_hits_of_ranks_are_put_back_in_the_val_sets_order(tmp_path):
    """Three ranks over 10 images (4, 3 and 3 of them, interleaved): every rank gets all 10 in order."""
    mp.spawn(_gather, args=(3, f"file://{tmp_path / 'init'}", 10, str(tmp_path)), nprocs=3, join=True)
    for rank in range(3):
        assert np.load(tmp_path / f"rank{rank}.npy").tolist() == (np.arange(10) % 3 == 0).tolist()
