"""The transfer suite's readers on tiny copies in each dataset's exact on-disk layout (tests/transfer_fixtures.py):
classes in label order, image counts per split through the shared checks (``data.expect``), each item's label
matching the class its file was written for, and clear errors for a missing or damaged copy."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from transfer_fixtures import BUILDERS, COLOURS, build

from moco_bench.core.errors import DataError, DatasetNotFound
from moco_bench.data.catalog import open_split


def _colour_label(img) -> int:
    """The class a fixture image was drawn for: the nearest of the fixture colours to its mean."""
    mean = np.asarray(img, dtype=np.float64).reshape(-1, 3).mean(0)
    return int(np.argmin([np.abs(mean - np.array(c)).sum() for c in COLOURS]))


@pytest.mark.parametrize("reader", sorted(BUILDERS))
def test_reader_lists_the_classes_and_counts_of_its_layout(reader, tmp_path):
    root, counts, classes = build(reader, tmp_path / reader)
    data = {"reader": reader, "root": str(root), "classes": len(classes), "expect": counts}
    for split, n in counts.items():
        ds = open_split(data, split)  # the shared checks: classes, count, a readable first image
        assert list(ds.classes) == classes and len(ds) == len(ds.images) == n
        for i in (0, n // 2, n - 1):
            img, label = ds[i]
            assert label == ds.targets[i] and _colour_label(img) == label % len(COLOURS)
    short = dict(data, expect={split: n + 1 for split, n in counts.items()})
    with pytest.raises(DataError, match="partial or different copy"):
        open_split(short, next(iter(counts)))


@pytest.mark.parametrize("reader", sorted(BUILDERS))
def test_missing_copy_is_dataset_not_found(reader, tmp_path):
    (tmp_path / "empty").mkdir()
    split = {"oxford_pets": "trainval"}.get(reader, "train")
    with pytest.raises(DatasetNotFound):
        open_split({"reader": reader, "root": str(tmp_path / "empty")}, split)


def test_sun397_labels_by_folder_not_by_name_prefix(tmp_path):
    root, _, _ = build("sun397", tmp_path)
    ds = open_split({"reader": "sun397", "root": str(root)}, "train")
    barn = [y for p, y in ds.samples if "/b/barn/" in p]
    assert barn and set(barn) == {ds.classes.index("barn")}


def test_caltech101_split_file_with_another_numbering_is_refused(tmp_path):
    root, _, _ = build("caltech101", tmp_path)
    lines = (root / "train.txt").read_text().replace("accordion/image_0001.jpg 2", "accordion/image_0001.jpg 1")
    (root / "train.txt").write_text(lines)
    with pytest.raises(DataError, match="sorted category"):
        open_split({"reader": "caltech101", "root": str(root)}, "train")


def test_cifar_batch_naming_a_callable_is_refused_unrun(tmp_path):
    root, _, _ = build("cifar100", tmp_path)

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    with open(root / "cifar-100-python" / "train", "wb") as f:
        pickle.dump({"data": Payload(), "fine_labels": [0]}, f, protocol=2)
    with pytest.raises(DataError, match="refused"):
        open_split({"reader": "cifar100", "root": str(root)}, "train")


def test_a_split_the_dataset_lacks_is_named(tmp_path):
    root, _, _ = build("food101", tmp_path)
    with pytest.raises(DataError, match="splits train, test"):
        open_split({"reader": "food101", "root": str(root)}, "val")
