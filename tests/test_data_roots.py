"""A dataset root is where the data is, not what it is: a run pointed at another folder stays comparable when the
dataset check (classes, the published image count of every split) passes, and a partial copy is not, naming the
short split. Built on a VOC2007 tree with the published split sizes (5,011 trainval, 4,952 test ids; every JPEG a
link to one real image, every test image with one annotated object), as the protocol's check reads it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from moco_bench.cli import main
from moco_bench.core.config import resolved
from moco_bench.data.check import check_data
from moco_bench.data.voc import VOC_CLASSES, voc_annotation_xml
from moco_bench.engine import comparability
from moco_bench.evaluators.catalog import load_evaluation

REPO = Path(__file__).resolve().parents[1]
SPLITS = {"trainval": 5011, "test": 4952}


def _write_voc(root: Path, counts: dict) -> Path:
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    real = root / "real.jpg"
    Image.new("RGB", (64, 48), (120, 30, 200)).save(real)
    for split, n in counts.items():
        ids = [f"{split}{i:06d}" for i in range(n)]
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for c, name in enumerate(VOC_CLASSES):
            lines = (f"{i} {1 if k % 20 == c else -1}\n" for k, i in enumerate(ids))
            (root / "ImageSets" / "Main" / f"{name}_{split}.txt").write_text("".join(lines))
        for k, i in enumerate(ids):
            (root / "JPEGImages" / f"{i}.jpg").symlink_to(real)
            obj = {"name": VOC_CLASSES[k % 20], "bbox": (2, 2, 40, 30), "difficult": False}
            (root / "Annotations" / f"{i}.xml").write_bytes(voc_annotation_xml(f"{i}.jpg", 64, 48, [obj]))
    return root


@pytest.fixture(scope="module")
def voc_copies(tmp_path_factory):
    """Two full copies in different folders and a partial one (10 test images short)."""
    base = tmp_path_factory.mktemp("datasets")
    full = _write_voc(base / "a" / "VOC2007", SPLITS)
    moved = base / "b" / "elsewhere"
    shutil.copytree(full, moved, symlinks=True)
    (moved / "real.jpg").unlink()  # the links of the copy point at the first copy's image
    shutil.copy(full / "real.jpg", moved / "real.jpg")
    partial = _write_voc(base / "p" / "VOC2007", {"trainval": 5011, "test": 4942})
    return {"full": full, "moved": moved, "partial": partial}


def test_another_root_with_a_passing_check_stays_comparable(voc_copies, capsys):
    assert main(["data", "check", "voc07_svm", f"data.root={voc_copies['full']}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("trainval: ok, 5,011 images in 20 classes, fingerprint ") and "(the published count)" in \
        out[0]
    assert out[1].startswith("test: ok, 4,952 images in 20 classes") and out[-1] == \
        "the published protocol (evaluate/voc07_svm.yaml)"


def test_the_record_keeps_the_check_and_a_moved_copy_has_the_same_fingerprint(voc_copies):
    checks = {}
    for name in ("full", "moved"):
        cfg = load_evaluation(REPO / "evaluate" / "voc07_svm.yaml", [f"data.root={voc_copies[name]}"])
        checks[name] = check_data(resolved(cfg), "voc07_svm")
        assessment = comparability.settle(comparability.assess(cfg), checks[name], cfg)
        assert assessment["comparable"] and "data.root" in assessment["free_changes"]
        assert not assessment["differences"] and assessment["data_problems"] == []
    assert checks["full"] == checks["moved"]
    assert {s: c["images"] for s, c in checks["full"].items()} == SPLITS


def test_a_partial_copy_fails_the_check_or_is_not_comparable_naming_the_short_split(voc_copies, capsys):
    root = voc_copies["partial"]
    assert main(["data", "check", "--config", "voc07_svm", f"data.root={root}"]) == 2
    err = capsys.readouterr().err
    assert "split test" in err and "4942 images, but the published split has 4952" in err
    assert main(["data", "check", "voc07_svm", f"data.root={root}", "data.expect=null"]) == 0  # run it anyway
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("not comparable: dataset check: test has 4,942 images, the published split 4,952")
    assert "data.root" in last


def test_detection_sources_at_another_root(voc_copies, capsys):
    """The same rule for a detectron2 protocol's sources (VOC07 trainval / test of the 9k protocol)."""
    root = voc_copies["full"]
    overrides = [f"datasets.sources.{n}.root={root}" for n in ("voc_2007_trainval", "voc_2007_test")]
    assert main(["data", "check", "voc07_frcnn_c4_9k", *overrides]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("voc_2007_trainval: ok, 5,011 images, fingerprint ")
    assert out[-1] == "the published protocol (evaluate/voc07_frcnn_c4_9k.yaml)"
    cfg = load_evaluation(REPO / "evaluate" / "voc07_frcnn_c4_9k.yaml", overrides + ["datasets.sources.voc_2007_test."
                                                                                       "expect=null"])
    cfg.datasets.sources.voc_2007_test.root = str(voc_copies["partial"])
    check = check_data(resolved(cfg), "9k")
    assessment = comparability.settle(comparability.assess(cfg), check, cfg)
    assert not assessment["comparable"]
    assert assessment["data_problems"] == ["voc_2007_test has 4,942 images, the published split 4,952"]
