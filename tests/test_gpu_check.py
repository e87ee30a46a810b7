"""``moco-bench gpu-check`` (``make gpu-check``) where no GPU is: its argument checks, its exit 0 saying so, and every
check's own code at toy size on the CPU (the hidden ``--cpu-smoke``), so that the one call on a GPU machine does
not fail on a bug of the script itself."""

from __future__ import annotations

import json

import pytest
import torch

from moco_bench.cli import main


@pytest.mark.parametrize("args, message", [
    (["--batch", "12"], "--batch 12: a positive multiple of 8"),
    (["--steps", "1"], "--steps 1: at least 2 timed steps"),
    (["--budget", "10"], "--budget 10: at least 60 seconds"),
    (["--only", "moco,bogus"], "--only bogus: expected some of versions,moco"),
])
def test_arguments_are_checked_without_a_gpu(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["gpu-check", *args])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: gpu-check would run")
def test_without_a_gpu_it_says_so_and_exits_0(capsys):
    assert main(["gpu-check"]) == 0
    assert "no CUDA device visible" in capsys.readouterr().out


def test_every_check_runs_at_toy_size_on_the_cpu(tmp_path):
    """Detection is left out here (a minute of R50-C4 on the CPU); tests/test_detection.py runs that code path."""
    out = tmp_path / "table.json"
    assert main(["gpu-check", "--cpu-smoke", "--only", "versions,moco,data,ddp,features,knn", "--out", str(out)]) == 0
    rows = {r["check"]: r for r in json.loads(out.read_text())}
    assert {r["status"] for r in rows.values()} <= {"PASS", "INFO", "SKIP"}
    for setting in ("fp32", "bf16", "bf16 channels_last"):
        assert "momentum rule holds" in rows[f"moco v2 resnet18 step {setting}"]["detail"]
    assert {f"torchrun gloo: {n}" for n in ("all-gather", "shuffle BN", "DDP MoCo v2 step bf16",
                                            "multi-head linear, SyncBN heads")} <= set(rows)
    assert rows["features resnet18 fp32"]["detail"].startswith("32 px; against the CPU's fp32: max rel. diff 0.0e+00")
    assert rows["knn search torch on cpu"]["status"] == "PASS" and rows["data: tensor pipeline"]["status"] == "PASS"
    assert rows["knn search faiss on the GPU"]["status"] == "SKIP"
