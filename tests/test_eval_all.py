"""eval-all: checked before it runs, resumes, isolates failures, reports skips, and runs through submitit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from checkpoint_builders import DEMO_ARCH

from moco_bench.cli import main
from moco_bench.core.errors import ConfigError
from moco_bench.engine.eval_all import eval_all
from moco_bench.engine.suite import load_suite
from moco_bench.results.store import read_result

KNN_DEMO = Path(__file__).resolve().parents[1] / "evaluate" / "demo" / "imagenet_knn.yaml"
CKPT = f"random:{DEMO_ARCH}@1"


def _suite(tmp_path: Path, entries: list[str]) -> Path:
    body = "".join(f"  - config: {KNN_DEMO}\n    overrides: [{e}]\n" for e in entries)
    path = tmp_path / "suite.yaml"
    path.write_text(f"version: 1\nname: test\nevaluations:\n{body}")
    return path


@pytest.fixture
def broken_imagefolder(imagefolder_root, tmp_path):
    root = shutil.copytree(imagefolder_root, tmp_path / "broken")
    next((root / "val").rglob("*.png")).write_bytes(b"not a png")
    return root


def test_resume_skips_finished_and_failure_does_not_stop_others(imagefolder_root, broken_imagefolder, tmp_path):
    suite = load_suite(_suite(tmp_path, [
        "name=knn_a",
        f"'name=knn_broken','data.root={broken_imagefolder}'",
        f"'name=knn_missing','data.root={tmp_path / 'absent'}'",
        "'name=knn_b','knn.k=[5]'",
    ]))
    out = tmp_path / "runs"
    rows = {r["evaluation"]: r for r in eval_all(CKPT, suite, out_root=out)}
    assert {k: r["status"] for k, r in rows.items()} == {"knn_a": "ok", "knn_broken": "failed",
                                                         "knn_missing": "skipped", "knn_b": "ok"}
    assert "unreadable image" in rows["knn_broken"]["reason"]
    assert "dataset folder not found" in rows["knn_missing"]["reason"]
    folder = next(out.iterdir())
    a = read_result(folder / "knn_a.json")
    assert a["status"] == "ok" and 0 < a["metrics"]["top1@k20"] <= 100
    assert read_result(folder / "knn_b.json")["metrics"].keys() == {"top1@k5", "top5@k5"}
    mtime = (folder / "knn_a.json").stat().st_mtime_ns

    again = {r["evaluation"]: r for r in eval_all(CKPT, suite, out_root=out)}
    assert again["knn_a"]["note"] == "already done" and again["knn_b"]["note"] == "already done"
    assert again["knn_broken"]["status"] == "failed" and not again["knn_broken"]["note"]  # failures are retried
    assert (folder / "knn_a.json").stat().st_mtime_ns == mtime


def test_cli_exit_code_and_summary(imagefolder_root, broken_imagefolder, tmp_path, capsys):
    path = _suite(tmp_path, ["name=knn_ok", f"'name=knn_broken','data.root={broken_imagefolder}'"])
    assert main(["eval-all", CKPT, "--suite", str(path), "--out", str(tmp_path / "runs")]) == 1
    out = capsys.readouterr().out
    assert "knn_ok" in out and "failed: knn_broken" in out


def test_suite_errors_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match=r"suite.yaml: evaluations\[0\].*override of 'knn.kk' refused"):
        load_suite(_suite(tmp_path, ["knn.kk=3"]))
    with pytest.raises(ConfigError, match="two evaluations are named 'knn_demo'"):
        load_suite(_suite(tmp_path, ["name=knn_demo", "name=knn_demo"]))
    (tmp_path / "unknown.yaml").write_text("version: 1\nevaluator: nope\nname: nope\n")
    (tmp_path / "s.yaml").write_text(f"version: 1\nevaluations:\n  - config: {tmp_path / 'unknown.yaml'}\n")
    with pytest.raises(ConfigError, match="unknown evaluator 'nope'"):
        load_suite(tmp_path / "s.yaml")
    assert main(["eval-all", CKPT, "--suite", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "runs")]) == 2
    assert not (tmp_path / "runs").exists()


def test_slurm_launcher_through_submitit_debug_executor(imagefolder_root, tmp_path):
    suite = load_suite(_suite(tmp_path, ["name=knn_job1", "'name=knn_job2','knn.k=[3]'"]))
    rows = eval_all(CKPT, suite, out_root=tmp_path / "runs", launcher="slurm",
                    slurm={"cluster": "debug", "folder": tmp_path / "logs"})
    assert [r["status"] for r in rows] == ["ok", "ok"] and all(r["note"].startswith("job ") for r in rows)
    folder = next((tmp_path / "runs").iterdir())
    assert read_result(folder / "knn_job2.json")["metrics"].keys() == {"top1@k3", "top5@k3"}


def test_one_launcher_sizes_jobs_by_their_resources(imagefolder_root, tmp_path, monkeypatch):
    """The linear heads ask for 2 GPUs: submitit's local executor starts 2 processes (one per GPU, gloo here on the
    CPU) that train the heads together; kNN asks for one process. eval-all under torchrun is refused."""
    linear = Path(__file__).resolve().parents[1] / "evaluate" / "demo" / "imagenet_linear.yaml"
    suite_path = tmp_path / "suite.yaml"
    suite_path.write_text(
        f"version: 1\nname: launch\nevaluations:\n"
        f"  - config: {linear}\n    overrides: [resources.gpus=2, resources.cpus=2, optim.batch_size=64, "
        f"schedule.epochs=1, 'schedule.milestones=[1]']\n"
        f"  - config: {KNN_DEMO}\n    overrides: ['knn.k=[5]']\n")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rows = eval_all(CKPT, load_suite(suite_path), out_root=tmp_path / "runs", launcher="slurm", workers=0,
                    slurm={"cluster": "local", "folder": tmp_path / "jobs"})
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    assert rows[0]["note"].endswith("2 process(es)") and rows[1]["note"].endswith("1 process(es)")
    record = read_result(next((tmp_path / "runs").iterdir()) / "linear_demo.json")
    assert record["details"]["world_size"] == 2 and record["details"]["batch_per_rank"] == 32
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="not under torchrun"):
        eval_all(CKPT, load_suite(suite_path), out_root=tmp_path / "runs2")
