"""Silent wrong numbers and failing machines (issue 18, items 3-14): each case named, checked before compute,
reported in one line, with nothing half-written left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from checkpoint_builders import DEMO_ARCH
from PIL import Image

from moco_bench.cli import main
from moco_bench.convert import load_backbone
from moco_bench.core.errors import Busy, ConfigError, DataError, ResultExistsError
from moco_bench.core.locks import exclusive
from moco_bench.data.check import check_sources
from moco_bench.data.images import load_rgb
from moco_bench.data.voc import read_image_set
from moco_bench.engine.eval_all import eval_all
from moco_bench.engine.runner import checkpoint_id, run_evaluation
from moco_bench.engine.suite import load_suite
from moco_bench.evaluators.cache import RowWriter
from moco_bench.evaluators.catalog import load_evaluation
from moco_bench.evaluators.features import load_split
from moco_bench.pretrain.schema import load_recipe

ROOT = Path(__file__).resolve().parents[1]
KNN = ROOT / "evaluate" / "demo" / "imagenet_knn.yaml"
SVM = ROOT / "evaluate" / "demo" / "voc07_svm.yaml"


@pytest.fixture
def mount(tmp_path):
    """Mount a small tmpfs (``mount('tmpfs', size)``) or a read-only bind (``mount('ro', folder)``); skipped, saying
    why, where this process may not mount."""
    mounted = []

    def _mount(kind: str, arg) -> Path:
        target = tmp_path / f"mnt{len(mounted)}"
        target.mkdir()
        cmds = ([["mount", "-t", "tmpfs", "-o", f"size={arg}", "tmpfs", str(target)]] if kind == "tmpfs" else
                [["mount", "--bind", str(arg), str(target)], ["mount", "-o", "remount,bind,ro", str(target)]])
        for cmd in cmds:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                if mounted or cmd is not cmds[0]:
                    subprocess.run(["umount", str(target)], capture_output=True)
                pytest.skip(f"cannot mount here ({' '.join(cmd[:3])}: {proc.stderr.strip()})")
        mounted.append(target)
        return target

    yield _mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


# --- 3. a VOC test set with a class that has no ground truth --------------------------------------------------

def test_voc_test_class_without_ground_truth_is_refused_before_training(minivoc_root):
    classes = list(load_evaluation(SVM).data.classes) + ["umbrella"]
    spec = {"format": "voc", "root": str(minivoc_root), "split": "test", "year": 2007}
    with pytest.raises(DataError, match=r"test set minivoc_test .* no ground-truth object of class\(es\) umbrella"):
        check_sources({"minivoc_test": spec}, ["minivoc_test"], classes)
    summary = check_sources({"minivoc_test": spec}, ["minivoc_test"], classes[:-1])
    assert summary["minivoc_test"]["images"] == 40 and min(summary["minivoc_test"]["objects_per_class"].values()) > 0


# --- 4. every image mode decoded to the right 8-bit RGB ------------------------------------------------------

def test_image_modes_decode_to_rgb(tmp_path):
    ramp = (np.arange(256 * 4).reshape(16, 64) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    g16 = np.asarray(load_rgb(tmp_path / "g16.png"))
    assert g16.shape == (16, 64, 3) and g16.max() == 255 and abs(int(g16[8, 0, 0]) - 128) <= 1  # scaled, not clipped
    assert (g16 == 255).mean() < 0.01  # PIL's own convert("RGB") turns 99% of these pixels to 255
    gray = Image.fromarray(np.full((4, 4), 77, np.uint8), "L")
    gray.save(tmp_path / "l.png")
    assert np.all(np.asarray(load_rgb(tmp_path / "l.png")) == 77)
    pal = Image.new("P", (4, 4))
    pal.putpalette([0, 0, 0, 200, 10, 30] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    p = np.asarray(load_rgb(tmp_path / "p.png"))
    assert p[1, 1].tolist() == [200, 10, 30] and p[0, 0].tolist() == [0, 0, 0]
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    assert np.asarray(load_rgb(tmp_path / "cmyk.jpg"))[0, 0, 0] > 200  # red
    Image.new("RGBA", (4, 4), (10, 20, 30, 0)).save(tmp_path / "rgba.png")
    assert np.asarray(load_rgb(tmp_path / "rgba.png"))[0, 0].tolist() == [10, 20, 30]  # alpha dropped
    Image.fromarray(np.full((4, 4), 0.5, np.float32), "F").save(tmp_path / "f.tiff")
    assert np.asarray(load_rgb(tmp_path / "f.tiff"))[0, 0, 0] == 128


# --- 5. COCO annotations that name no image -----------------------------------------------------------------

def test_coco_annotation_without_image_is_counted(minicoco_root, tmp_path):
    doc = json.loads((minicoco_root / "annotations" / "instances_test.json").read_text())
    doc["annotations"].append({**doc["annotations"][0], "id": 999999, "image_id": 123456789})
    bad = tmp_path / "instances.json"
    bad.write_text(json.dumps(doc))
    spec = {"format": "coco", "json": str(bad), "image_root": str(minicoco_root / "test")}
    summary = check_sources({"c": spec}, ["c"], None)
    assert summary["c"]["images"] == 40 and summary["c"]["annotations_without_image"] == 1


# --- 7. VOC ids are names, not paths ------------------------------------------------------------------------

def test_voc_image_ids_are_names_not_paths(minivoc_root, tmp_path):
    voc = shutil.copytree(minivoc_root, tmp_path / "VOC2007")
    outside = tmp_path / "x.jpg"
    shutil.copy(voc / "JPEGImages" / "000001.jpg", outside)
    split = voc / "ImageSets" / "Main" / "test.txt"
    split.write_text(split.read_text() + "../../x\n")
    with pytest.raises(DataError, match=r"image id '../../x' is not a name"):
        read_image_set(voc, "test")


# --- 8. a full disk during feature extraction ---------------------------------------------------------------

def test_full_disk_is_refused_before_extraction_and_leaves_no_temporary(mount, minivoc_root):
    small = mount("tmpfs", "64k")
    cfg = load_evaluation(SVM, [f"data.root={minivoc_root}", "features.layers=[feature1,feature2]"])
    with pytest.raises(DataError, match=r"the features need 160\.0 KiB in .*, which has [1-9][\d.]* KiB free"):
        load_split(load_backbone(f"random:{DEMO_ARCH}"), cfg, small, "test", workers=0)
    assert not list(small.rglob("*.tmp")) and not list(small.rglob("*.npy"))
    writer = RowWriter(small / "f.npy", 100, 1024)  # the space is checked, then someone else fills the disk
    with pytest.raises(OSError, match="No space left"):
        for _ in range(100):
            writer.write(np.ones((1, 1024), np.float32))
            writer.file.flush()
    writer.discard()
    assert not [p for p in small.rglob("*") if p.suffix in (".tmp", ".npy")]


def test_stale_temporaries_of_dead_writers_are_swept(minivoc_root, tmp_path):
    cfg = load_evaluation(SVM, [f"data.root={minivoc_root}"])
    backbone = load_backbone(f"random:{DEMO_ARCH}")
    load_split(backbone, cfg, tmp_path / "cache", "test", workers=0)
    entry = next((tmp_path / "cache").iterdir())
    dead = entry / ".feature3-abc.npy.999999999.tmp"
    dead.write_bytes(b"x" * 100)
    load_split(backbone, load_evaluation(SVM, [f"data.root={minivoc_root}", "features.layers=[feature3]"]),
               tmp_path / "cache", "test", workers=0)
    assert not dead.exists()


# --- 9. read-only folders: one line with the path; a finished cache is readable ----------------------------

def test_read_only_output_is_one_line_and_finished_cache_reads(mount, imagefolder_root, tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    ro = mount("ro", runs)
    rc = main(["eval", f"random:{DEMO_ARCH}", "--config", str(KNN), f"data.root={imagefolder_root}", "--out", str(ro),
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Read-only file system" in err and str(ro) in err
    cache = tmp_path / "cache"
    cfg = load_evaluation(SVM, [f"data.root={imagefolder_root.parent / 'minivoc' / 'VOCdevkit' / 'VOC2007'}"])
    load_split(load_backbone(f"random:{DEMO_ARCH}"), cfg, cache, "test", workers=0)
    for lock in cache.rglob(".lock"):
        lock.unlink()  # a cache copied without its lock files, onto a read-only disk
    frozen = mount("ro", cache)
    again = load_split(load_backbone(f"random:{DEMO_ARCH}"), cfg, frozen, "test", workers=0)
    assert again.cache == {"feature5": "hit"}


# --- 10. two eval-all runs on one output --------------------------------------------------------------------

def test_second_process_neither_repeats_nor_overwrites(imagefolder_root, tmp_path):
    suite_path = tmp_path / "suite.yaml"
    suite_path.write_text(f"version: 1\nname: t\nevaluations:\n  - config: {KNN}\n"
                          f"    overrides: ['data.root={imagefolder_root}', 'knn.k=[5]']\n")
    suite = load_suite(suite_path)
    backbone = load_backbone(f"random:{DEMO_ARCH}")
    folder = tmp_path / "runs" / checkpoint_id(backbone)
    with exclusive(folder / ".knn_demo.lock", "test"):  # the first run holds the evaluation
        rows = eval_all(f"random:{DEMO_ARCH}", suite, out_root=tmp_path / "runs")
        assert rows[0]["status"] == "not run" and "running in another process" in rows[0]["reason"]
        assert not (folder / "knn_demo.json").exists()
        with pytest.raises(Busy):
            run_evaluation(backbone, suite.entries[0].cfg, out_root=tmp_path / "runs")
    first = run_evaluation(backbone, suite.entries[0].cfg, out_root=tmp_path / "runs")
    mtime = (folder / "knn_demo.json").stat().st_mtime_ns
    with pytest.raises(ResultExistsError):  # finished meanwhile: checked again under the lock, not replaced
        run_evaluation(backbone, suite.entries[0].cfg, out_root=tmp_path / "runs")
    assert first["status"] == "ok" and (folder / "knn_demo.json").stat().st_mtime_ns == mtime


# --- 11. Ctrl-C in eval-all ---------------------------------------------------------------------------------

def test_ctrl_c_is_one_line(imagefolder_root, tmp_path):
    linear = ROOT / "evaluate" / "demo" / "imagenet_linear.yaml"
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"version: 1\nname: t\nevaluations:\n  - config: {KNN}\n  - config: {linear}\n"
                     "    overrides: ['schedule.epochs=100', 'schedule.milestones=[90]']\n")
    cmd = [sys.executable, "-m", "moco_bench", "eval-all", f"random:{DEMO_ARCH}", "--suite", str(suite),
           "--out", str(tmp_path / "runs"), "--device", "cpu", f"data.root={imagefolder_root}"]
    # A shell starts background jobs with SIGINT ignored, and a child inherits that (then Python never raises
    # KeyboardInterrupt): the child gets the default disposition back, as a terminal's foreground job has it.
    proc = subprocess.Popen(cmd, env={**os.environ, "MOCO_BENCH_DATA": str(tmp_path / "cache")},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(10)
    for _ in range(3):  # Python swallows a KeyboardInterrupt raised in an at-fork hook (a DataLoader worker's start)
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=10)
            break
        except subprocess.TimeoutExpired:
            continue
    else:
        proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted; finished results and checkpoints are kept" in err


# --- 12. tables on a path that is not there -----------------------------------------------------------------

def test_tables_on_a_misspelled_path_keeps_the_report(tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.html").write_text("previous report")
    assert main(["tables", str(tmp_path / "runz"), "-o", str(out)]) == 2
    assert "runz: no such results file or folder" in capsys.readouterr().err
    assert (out / "report.html").read_text() == "previous report"


def test_interrupted_report_keeps_the_previous_one(imagefolder_root, tmp_path, monkeypatch):
    from moco_bench.results import report

    cfg = load_evaluation(KNN, [f"data.root={imagefolder_root}", "knn.k=[5]"])
    run_evaluation(load_backbone(f"random:{DEMO_ARCH}"), cfg, out_root=tmp_path / "runs")
    out = tmp_path / "report"
    report.write_report([tmp_path / "runs"], out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {"report.html", "report.md"} <= {str(p) for p in before}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "render_page", interrupted)  # Ctrl-C after the tables, before the page
    with pytest.raises(KeyboardInterrupt):
        report.write_report([tmp_path / "runs"], out)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "runs"]  # no half-built folder left
    (out / "notes.txt").write_text("mine")
    monkeypatch.undo()
    with pytest.raises(DataError, match=r"report: exists and holds files this command did not write"):
        report.write_report([tmp_path / "runs"], out)


# --- 13. numbers out of range, k larger than the data: refused before compute ---------------------------------

def test_out_of_range_numbers_are_refused_at_load(imagefolder_root, tmp_path):
    with pytest.raises(ConfigError, match=r"model.K: 0 is below its minimum 1"):
        load_recipe(ROOT / "pretrain" / "mocov2_demo_fmnist.yaml", ["model.K=0"])
    with pytest.raises(ConfigError, match=r"knn.temperature: -1.0 is below"):
        load_evaluation(KNN, ["knn.temperature=-1"])
    cfg = load_evaluation(KNN, [f"data.root={imagefolder_root}", "knn.k=[10,201]"])
    record = run_evaluation(load_backbone(f"random:{DEMO_ARCH}"), cfg, out_root=tmp_path / "runs")
    assert record["status"] == "failed" and "needs at least 201" in record["error"]
    assert "features" not in record["timing"]["seconds"] or not list((tmp_path / "runs").rglob("*.npy"))


# --- 14. the dataset check, in every evaluation and on the command line ---------------------------------------

def test_partial_dataset_is_an_error_before_compute(imagefolder_root, tmp_path, capsys):
    config = tmp_path / "knn.yaml"
    data = f"base: {KNN}\ndata:\n  root: {imagefolder_root}\n  train_split: train\n"
    config.write_text(data + "  expect: {train: 1281167, val: 50000}\n")
    assert main(["data", "check", str(config)]) == 2
    assert "200 images, but the published split has 1281167: a partial" in capsys.readouterr().err
    config.write_text(data + "  expect: {train: 200, val: 100}\n")
    assert main(["data", "check", str(config)]) == 0
    out = capsys.readouterr().out
    assert "train: ok, 200 images in 10 classes, fingerprint " in out and "(the published split has 1,281,167)" in out
    assert out.splitlines()[-1].startswith("not comparable: dataset check: train has 200 images")


# --- also: files honour the umask -----------------------------------------------------------------------------

def test_written_files_follow_the_umask(tmp_path):
    from moco_bench.core.atomic import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
