"""The WebDataset reader on shards written by the webdataset library itself from the embedded ImageFolder: the
same images, labels, classes and checks as the folder it was made from, and the frozen-feature protocols on it."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

from moco_bench.convert import load_backbone
from moco_bench.core.errors import DataError, DatasetNotFound
from moco_bench.data.catalog import open_split
from moco_bench.data.check import check_data
from moco_bench.engine.runner import run_evaluation
from moco_bench.evaluators.catalog import load_evaluation

wds = pytest.importorskip("webdataset")
EVALUATE = Path(__file__).resolve().parents[1] / "evaluate"


def _write_shards(folder_root: Path, out: Path, per_shard: int = 70) -> Path:
    """``<out>/<split>-%06d.tar`` from the folder tree, with ``classes.txt`` (webdataset's ShardWriter)."""
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        dataset = open_split({"reader": "imagefolder", "root": str(folder_root), "classes": 10}, split)
        with wds.ShardWriter(str(out / f"{split}-%06d.tar"), maxcount=per_shard, verbose=0) as sink:
            for i, (path, label) in enumerate(zip(dataset.images, dataset.targets)):
                sink.write({"__key__": f"{split}/{i:06d}", "png": Path(path).read_bytes(), "cls": str(label)})
    (out / "classes.txt").write_text("\n".join(dataset.classes) + "\n")
    return out


@pytest.fixture(scope="module")
def shards(imagefolder_root, tmp_path_factory):
    return _write_shards(imagefolder_root, tmp_path_factory.mktemp("shards"))


def test_shards_hold_the_folder_they_were_written_from(shards, imagefolder_root):
    folder = open_split({"reader": "imagefolder", "root": str(imagefolder_root), "classes": 10}, "val")
    data = {"reader": "webdataset", "root": str(shards), "classes": 10, "expect": {"val": 100}}
    split = open_split(data, "val")
    assert len(list(shards.glob("val-*.tar"))) == 2  # 100 images in shards of 70
    assert split.classes == folder.classes and split.targets == folder.targets
    image, label = split[42]
    assert label == folder.targets[42] and np.array_equal(np.asarray(image), np.asarray(folder[42][0]))
    assert split.images[0].endswith("val-000000.tar/val/000000.png")
    with pytest.raises(DataError, match="published split has 50000"):
        open_split({**data, "expect": {"val": 50000}}, "val")


def test_check_and_fingerprint_do_not_depend_on_where_shards_lie(shards, tmp_path):
    cfg = {"data": {"reader": "webdataset", "root": str(shards), "train_split": "train", "test_split": "val",
                    "classes": 10}}
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for f in shards.iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    first, second = check_data(cfg), check_data({"data": {**cfg["data"], "root": str(moved)}})
    assert first == second and first["train"]["images"] == 200 and first["val"]["classes"] == 10


def test_broken_shards_are_named(shards, tmp_path):
    with pytest.raises(DatasetNotFound, match="no WebDataset shards for split 'test'"):
        open_split({"reader": "webdataset", "root": str(shards)}, "test")
    bad = tmp_path / "bad"
    bad.mkdir()
    with tarfile.open(bad / "val-000000.tar", "w") as tar:
        png = tmp_path / "a.png"
        png.write_bytes((shards / "val-000000.tar").read_bytes()[:10])
        tar.add(png, arcname="k1.png")
    with pytest.raises(DataError, match=r"val-000000.tar: 1 image\(s\) without a .cls label, e.g. k1"):
        open_split({"reader": "webdataset", "root": str(bad)}, "val")


def test_knn_protocol_on_shards(shards, tmp_path):
    cfg = load_evaluation(EVALUATE / "demo" / "imagenet_knn.yaml",
                          [f"data.root={shards}", "data.reader=webdataset", "data.train_split=train", "knn.k=[5]"])
    record = run_evaluation(load_backbone("random:resnet18_small_w0.5@0"), cfg, out_root=tmp_path, workers=0)
    assert record["status"] == "ok", record["error"]
    assert 10.0 < record["metrics"]["top1@k5"] <= 100.0
