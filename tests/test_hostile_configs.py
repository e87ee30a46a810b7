"""Hostile values, configs, locks and signals (issue 26's items outside the converter and the tables): each ends in
one line naming the file or key, exit status 2, within seconds, with nothing written through a planted link.
Commands that could take the machine run in a child process under a memory cap and a timeout."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from moco_bench.cli import main
from moco_bench.core.atomic import human_bytes
from moco_bench.core.errors import Busy, ConfigError, DataError
from moco_bench.core.locks import exclusive, waiting
from moco_bench.evaluators.cache import check_free_space
from moco_bench.evaluators.catalog import load_evaluation
from moco_bench.pretrain.schema import load_recipe

REPO = Path(__file__).resolve().parents[1]
KNN = REPO / "evaluate" / "demo" / "imagenet_knn.yaml"
DEMO_RECIPE = REPO / "pretrain" / "mocov2_demo_fmnist.yaml"
CAP = 3 << 30  # heap and private mappings of a child: a regression fails with MemoryError instead of taking the machine


def _capped(*args: str, timeout: float = 60, env=None, cwd=None) -> subprocess.CompletedProcess:
    def limit():
        resource.setrlimit(resource.RLIMIT_DATA, (CAP, CAP))
    return subprocess.run([sys.executable, "-m", "moco_bench", *args], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, cwd=cwd)


def _one_line_error(out: subprocess.CompletedProcess, *needles: str) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    lines = [line for line in out.stderr.splitlines() if line.startswith("moco-bench: error:")]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


# --- 3. lock files never follow a link -------------------------------------------------------------------------

@pytest.mark.parametrize("lock", [exclusive, waiting])
def test_a_planted_link_or_fifo_where_a_lock_goes_is_refused_and_its_target_kept(lock, tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    link = tmp_path / "work" / ".knn_demo.lock"
    link.parent.mkdir()
    link.symlink_to(target)
    with pytest.raises(DataError, match=r"\.knn_demo\.lock: the lock file is a symbolic link .*not followed"):
        with lock(link, "knn_demo"):
            pass
    assert target.read_text() == "keep me"
    fifo = tmp_path / "work" / ".lock"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        with lock(fifo, "cache"):
            pass


def test_evaluation_with_a_planted_lock_link_writes_nothing_through_it(imagefolder_root, tmp_path, capsys):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    from moco_bench.convert import load_backbone
    from moco_bench.engine.runner import checkpoint_id

    out = tmp_path / "runs"
    folder = out / checkpoint_id(load_backbone("random:resnet18_small_w0.5"))  # the checkpoint's results folder
    folder.mkdir(parents=True)
    (folder / ".knn_demo.lock").symlink_to(target)
    rc = main(["eval", "random:resnet18_small_w0.5", "--config", str(KNN), f"data.root={imagefolder_root}",
               "data.train_split=train", "--out", str(out), "--device", "cpu", "--workers", "0"])
    assert rc == 2 and "the lock file is a symbolic link" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_a_stopped_lock_holder_is_named_and_given_up_on(tmp_path, monkeypatch):
    lock = tmp_path / ".lock"
    code = ("import sys, time; from moco_bench.core.locks import exclusive\n"
            f"with exclusive({str(lock)!r}, 'holder'):\n    print('held', flush=True); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout.readline().strip() == "held"
        os.kill(child.pid, signal.SIGSTOP)
        monkeypatch.setenv("MOCO_BENCH_LOCK_STOPPED_S", "1")
        t0 = time.monotonic()
        with pytest.raises(Busy, match=rf"held by pid {child.pid}, which is stopped .*kill -CONT {child.pid}"):
            with waiting(lock, "feature cache x"):
                pass
        assert time.monotonic() - t0 < 10
    finally:
        child.kill()
        child.wait()


# --- 4. NaN and infinity pass no bound; empty lists and absurd sizes name their key -------------------------------

@pytest.mark.parametrize("override, message", [
    ("knn.temperature=nan", "knn.temperature: nan is not a finite number"),
    ("knn.temperature=inf", "knn.temperature: inf is not a finite number"),
    ("knn.k=[]", "knn.k: an empty list"),
    ("transform.test.resize=100000", "transform.test.resize: 100000 is above its maximum 4096"),
    ("knn.temperature=!!python/object/apply:os.system [\"true\"]", "its value is not a plain YAML value"),
    ('data.name="\\x"', "its value is not a plain YAML value"),
])
def test_bad_values_of_an_evaluation_name_their_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_evaluation(KNN, [override])


@pytest.mark.parametrize("override, message", [
    ("svm.costs=[nan]", "svm.costs: nan is not a finite number"),
    ("svm.costs=[1.0,.inf]", "svm.costs: inf is not a finite number"),
    ("svm.costs=[]", "svm.costs: an empty list"),
])
def test_svm_costs_must_be_finite_and_given(override, message):
    with pytest.raises(ConfigError, match=message):
        load_evaluation(REPO / "evaluate" / "voc07_svm.yaml", [override])


@pytest.mark.parametrize("override, message", [
    ("model.T=inf", "model.T: inf is not a finite number"),
    ("transform.crop=100000", "transform.crop: 100000 is above its maximum 4096"),
])
def test_bad_recipe_values_name_their_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(DEMO_RECIPE, [override])


def test_nan_temperature_through_the_cli_is_refused_before_any_work(tmp_path):
    out = _capped("eval", "random:resnet18_small_w0.5", "--config", str(KNN), "knn.temperature=nan", "--out",
                  str(tmp_path / "runs"), "--device", "cpu")
    _one_line_error(out, "knn.temperature: nan is not a finite number")
    assert not (tmp_path / "runs").exists()


# --- 7. a queue that cannot fit is refused before anything is allocated ----------------------------------------

def test_a_queue_larger_than_memory_is_refused_naming_its_size(imagefolder_root, tmp_path):
    out = _capped("pretrain", "--config", str(DEMO_RECIPE), "model.K=1000000000", f"data.root={imagefolder_root}",
                  f"output_dir={tmp_path / 'p'}", "monitor.knn_every=0", "device=cpu", timeout=60)
    _one_line_error(out, "model.K=1,000,000,000 with model.dim=128: the queue takes", "available")
    assert not (tmp_path / "p").exists()


# --- 8. a YAML alias bomb is refused before it expands -----------------------------------------------------------

def _alias_bomb(path: Path, base: Path) -> Path:
    lines = [f"base: {base}", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}]"
              for i in range(1, 10)]
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size < 1500
    return path


@pytest.mark.parametrize("command", ["eval", "data check"])
def test_a_yaml_alias_bomb_is_refused_in_seconds(command, tmp_path):
    bomb = _alias_bomb(tmp_path / "bomb.yaml", KNN)
    args = ["eval", "random:resnet18", "--config", str(bomb)] if command == "eval" else ["data", "check", str(bomb)]
    t0 = time.monotonic()
    out = _capped(*args, "--out", str(tmp_path / "runs")) if command == "eval" else _capped(*args)
    _one_line_error(out, "bomb.yaml: its anchors and aliases expand to more than 100,000 values")
    assert time.monotonic() - t0 < 30


# --- weak: the smaller ones -------------------------------------------------------------------------------------

def test_an_embedded_build_option_of_the_wrong_kind_names_the_key(tmp_path):
    out = _capped("data", "build", "minivoc", "n_trainval=abc", "--root", str(tmp_path))
    _one_line_error(out, "option n_trainval='abc' should be like its default 300 (int)")
    assert not any(tmp_path.iterdir())


def test_a_full_disk_names_what_was_being_written(tmp_path):
    """RLIMIT_FSIZE makes every write past 600 bytes fail as a full disk would (EFBIG instead of ENOSPC): a real
    short write, not a mock."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (600, 600))
    out = subprocess.run([sys.executable, "-m", "moco_bench", "data", "build", "minivoc", "n_trainval=8", "n_test=8",
                          "--root", str(tmp_path)], capture_output=True, text=True, timeout=60, preexec_fn=limit,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    _one_line_error(out, f"{tmp_path / 'minivoc'}: File too large")
    assert not any(tmp_path.iterdir())  # the half-built folder is gone


def test_the_free_space_check_speaks_in_units_that_show_the_numbers(tmp_path):
    assert (human_bytes(300), human_bytes(3 << 20), human_bytes(1.5 * 2**30)) == ("300 B", "3.00 MiB", "1.50 GiB")
    with pytest.raises(DataError, match=r"features: the features need 1024\.0 TiB in .*, which has \d[\d.]* [KMGT]iB "
                                        "free"):
        check_free_space(tmp_path, 2**50, "features")


def test_data_check_refuses_splits_with_other_classes(imagefolder_root, tmp_path):
    copy = tmp_path / "folder"
    shutil.copytree(imagefolder_root, copy)
    shutil.rmtree(next(iter(sorted((copy / "val").iterdir()))))
    out = _capped("data", "check", str(KNN), f"data.root={copy}", "data.train_split=train", "data.classes=null")
    _one_line_error(out, "splits train and val have other classes (10 vs 9")


def _png_header_only(path: Path, side: int) -> None:
    """A 1-bit grayscale PNG whose header claims ``side`` x ``side`` pixels (PIL refuses it as a decompression
    bomb from the header alone)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_a_decompression_bomb_image_names_its_file(tmp_path):
    folder = tmp_path / "data"
    for split in ("train", "val"):
        (folder / split / "a").mkdir(parents=True)
        _png_header_only(folder / split / "a" / "0.png", 100_000)
    out = _capped("data", "check", str(KNN), f"data.root={folder}", "data.train_split=train", "data.classes=1")
    _one_line_error(out, str(folder / "train" / "a" / "0.png"), "decompression bomb")


def test_sigterm_unwinds_and_removes_the_half_built_folder(tmp_path):
    """A scheduler's SIGTERM in the middle of a dataset build: exit 143 with one line, the temporary folder gone."""
    child = subprocess.Popen([sys.executable, "-m", "moco_bench", "data", "build", "imagefolder",
                              "train_per_class=3000", "val_per_class=100", "--root", str(tmp_path)],
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".imagefolder.*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob(".imagefolder.*")), "the build never started"
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 143 and "terminated (SIGTERM)" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_make_passes_a_checkpoint_name_as_text_never_as_a_command(tmp_path):
    if shutil.which("make") is None or not (REPO / ".venv" / ".setup-done").exists():
        pytest.skip("needs make and the set-up .venv (make setup)")
    marker = tmp_path / "pwned"
    for dry in (["-n"], []):
        out = subprocess.run(["make", "-s", *dry, "eval-all", f"CKPT=$(shell touch {marker})",
                              f"OUT={tmp_path / 'runs'}"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert not marker.exists(), out.stdout + out.stderr
    assert "no such checkpoint file" in out.stderr and f"$(shell touch {marker})" in out.stderr

