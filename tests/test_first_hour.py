"""A researcher's first hour, outside the checkout: shipped configs and suites by name from any folder, eval-all's
--only / --skip / --plan, suite-wide overrides where a key exists, every misfit of a suite named before any work,
the Python API on an nn.Module (twice: the second call returns the stored record), and a wheel installed into a
fresh virtual environment that runs the CLI and finds the shipped configs."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import moco_bench
from moco_bench.core.errors import ConfigError
from moco_bench.engine.suite import load_suite
from moco_bench.models import resnets

REPO = Path(__file__).resolve().parents[1]
SMALL = "random:resnet18_small_w0.5"


def _cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m moco_bench`` in another folder, as a researcher runs it (the checkout's package)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "moco_bench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_eval_by_protocol_name_from_another_folder(imagefolder_root, tmp_path):
    """`--config imagenet_knn` (the ImageNet protocol, pointed at the embedded set) and `demo/imagenet_knn`."""
    small = ["features.batch_size=64", f"data.root={imagefolder_root}", "data.expect=null", "data.classes=10",
             "knn.k=[5]", "transform.test.resize=32", "transform.test.crop=32"]
    out = _cli("eval", "random:resnet18", "--config", "imagenet_knn", *small, "--out", "runs", "--device", "cpu",
               "--workers", "0", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "imagenet_knn: ok (top1@k5" in out.stdout
    record_line = next(line for line in out.stdout.splitlines() if line.strip().startswith("record:"))
    assert "runs/random-resnet18" in record_line and record_line.rstrip().endswith(" s)")
    assert (tmp_path / record_line.split()[1]).is_file()
    out = _cli("eval", SMALL, "--config", "demo/imagenet_knn", f"data.root={imagefolder_root}",
               "data.train_split=train", "--out", "runs", "--device", "cpu", "--workers", "0", cwd=tmp_path)
    assert out.returncode == 0 and "knn_demo: ok" in out.stdout, out.stderr[-2000:]


def test_eval_all_by_suite_name_with_only_and_the_plan(imagefolder_root, tmp_path):
    root = f"data.root={imagefolder_root}"
    out = _cli("eval-all", SMALL, "--suite", "demo", "--only", "knn_demo", root, "data.train_split=train",
               "--out", "runs", "--device", "cpu", "--workers", "0", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| knn_demo " in out.stdout and "linear_demo" not in out.stdout
    plan = _cli("eval-all", SMALL, "--suite", "demo", "--skip", "demo_voc_detection_fpn_short", root,
                "data.train_split=train", "--out", "runs", "--plan", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr[-2000:]
    lines = plan.stdout.splitlines()
    knn = next(line for line in lines if line.startswith("| knn_demo "))
    assert "| done " in knn and "| ok, 300 images in 2 split(s)" in knn
    total = lines[-1]
    assert total.startswith("total: ") and "GPU hours to run" in total and "costs.yaml" in total
    assert not list((tmp_path / "runs").rglob("linear_demo.json"))  # the plan ran nothing


def test_suite_wide_overrides_apply_where_the_key_exists_and_unknown_names_are_errors():
    suite = load_suite("demo", ["arch=resnet50"])
    applied = {e.name: e.applied for e in suite.entries}
    assert applied["linear_demo"] == ["arch=resnet50"] and applied["knn_demo"] == []
    with pytest.raises(ConfigError, match="knn.kk=3: no evaluation of the suite has that key"):
        load_suite("demo", ["knn.kk=3"])
    with pytest.raises(ConfigError, match=r"--only knn: not in suite demo \(knn_demo, "):
        load_suite("demo", only=["knn"])


def test_every_misfit_of_a_suite_is_named_before_any_work(tmp_path, capsys):
    """A torchvision ResNet-18 against the demo suite (written for the small-image variant): all at once, rc 2."""
    from moco_bench.cli import main

    rc = main(["eval-all", "random:resnet18", "--suite", "demo", "--out", str(tmp_path / "runs"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "evaluations of suite demo do not fit random:resnet18" in err
    for name in ("linear_demo", "mhead_linear_demo", "mhead_linear_fast_demo"):
        assert f"{name}: the protocol is set up for resnet18_small_w0.5" in err
    assert "--skip " in err and not (tmp_path / "runs").exists()


def test_the_python_api_on_a_module_returns_the_stored_record_the_second_time(imagefolder_root, tmp_path):
    model = resnets.build("resnet18_small_w0.5")
    kwargs = dict(out=tmp_path / "runs", device="cpu", workers=0, data__root=str(imagefolder_root),
                  data__train_split="train", knn__k=[5, 10])
    first = moco_bench.evaluate(model, "demo/imagenet_knn", **kwargs)
    assert first["status"] == "ok" and set(first["metrics"]) == {"top1@k5", "top5@k5", "top1@k10", "top5@k10"}
    assert first["checkpoint"]["label"] == "SmallImageResNet (in memory)"
    assert moco_bench.evaluate(model, "demo/imagenet_knn", **kwargs) == first
    df = moco_bench.load_results(tmp_path / "runs")
    assert set(df["metric"]) >= {"top1@k5", "top1@k10"}
    report = moco_bench.report(tmp_path / "runs", tmp_path / "report")
    assert report.name == "report.md" and (tmp_path / "report" / "report.html").is_file()


def test_a_wheel_in_a_fresh_venv_runs_and_finds_the_shipped_configs(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(wheels), str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    wheel = next(wheels.glob("moco_bench-*.whl"))
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   timeout=300)
    # the dependencies (torch and the rest) come from this environment, as a site folder of the new venv;
    # moco_bench itself only from the wheel (the checkout's editable finder is not loaded there)
    site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True,
                          text=True, check=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = [str(venv / "bin" / "moco-bench")]
    out = subprocess.run(run + ["--help"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0 and "eval-all" in out.stdout, out.stderr[-2000:]
    where = subprocess.run([str(python), "-c", "import moco_bench.core.paths as p; print(p.project_root())"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert where.stdout.strip().endswith("site-packages/moco_bench/shipped"), where.stdout + where.stderr
    out = subprocess.run(run + ["data", "check", "imagenet_knn"], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=120)
    assert out.returncode == 2 and "datasets/imagenet/train: dataset folder not found" in out.stderr, out.stderr
