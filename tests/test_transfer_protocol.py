"""The transfer suite's protocol end to end on every dataset's tiny copy (tests/transfer_fixtures.py): each
shipped protocol file, pointed at the copy, extracts features, chooses its cost on validation only, refits on
train + val and reports its published metric; corrupting the test labels on disk changes no chosen cost and no
validation score; the 11-point AP and the validation carve are the source's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat, savemat
from transfer_fixtures import build

from moco_bench import evaluators
from moco_bench.convert import load_backbone
from moco_bench.engine.runner import run_evaluation
from moco_bench.evaluators.base import EvalContext
from moco_bench.evaluators.catalog import load_evaluation
from moco_bench.evaluators.transfer.logreg import carve_validation, costs, voc11_ap

EVALUATE = Path(__file__).resolve().parents[1] / "evaluate"
READER = {"cifar10": "cifar10", "cifar100": "cifar100", "food101": "food101", "aircraft": "fgvc_aircraft",
          "cars": "stanford_cars", "dtd": "dtd", "pets": "oxford_pets", "flowers": "flowers102",
          "caltech101": "caltech101", "sun397": "sun397"}
SMALL = ["transform.test.resize=32", "transform.test.crop=32", "features.batch_size=64", "logreg.wd_count=12"]


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("random:resnet18_small_w0.5")


def _config(name: str, root: Path, counts: dict, classes, extra=()):
    overrides = [f"data.root={root}", "data.expect=" + json.dumps(counts).replace('"', ""), *SMALL, *extra]
    if not isinstance(classes, int):
        overrides.append(f"data.classes={len(classes)}")
    return load_evaluation(EVALUATE / f"transfer_{name}.yaml", overrides)


def _run(backbone, cfg, tmp_path: Path):
    ctx = EvalContext(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", workers=0)
    return evaluators.get("transfer_logreg")(backbone, cfg, ctx)


@pytest.mark.parametrize("name", sorted(READER))
def test_protocol_end_to_end_on_each_dataset(name, backbone, tmp_path):
    root, counts, classes = build(READER[name], tmp_path / "data")
    cfg = _config(name, root, counts, classes if name != "flowers" else 102)
    out = _run(backbone, cfg, tmp_path)
    metric = str(cfg.logreg.metric)
    assert list(out.metrics) == [metric] and 0 <= out.metrics[metric] <= 100
    assert out.details["C"] in costs(list(cfg.logreg.wd_log10), 12)
    n = out.details["images"]
    if cfg.data.val_split:
        assert (n["train"], n["val"]) == (counts[cfg.data.train_split], counts[cfg.data.val_split])
    else:  # ssl-transfer's carve: floor(0.2 n) of train for validation, the rest to fit
        assert n["val"] == int(np.floor(0.2 * counts[cfg.data.train_split]))
        assert n["train"] + n["val"] == counts[cfg.data.train_split]
    assert n["test"] == counts[cfg.data.test_split] and out.info["solver"] == "sklearn"
    assert out.metrics[metric] > 60  # classes of distinct colours: the protocol learns them


def test_voc07_protocol_end_to_end(backbone, minivoc_root, tmp_path):
    cfg = load_evaluation(EVALUATE / "demo" / "transfer_minivoc.yaml",
                          [f"data.root={minivoc_root}", *SMALL, "logreg.wd_count=4"])
    out = _run(backbone, cfg, tmp_path)
    assert 0 < out.metrics["voc11_map"] <= 100 and out.details["images"] == {"train": 20, "val": 20, "test": 40}


def _shuffle_test_labels(name: str, root: Path) -> None:
    """Rewrite the test split's label file on disk with other labels for its images."""
    if name == "food101":
        meta = json.loads((root / "food-101" / "meta" / "test.json").read_text())
        keys = sorted(meta)
        (root / "food-101" / "meta" / "test.json").write_text(json.dumps(
            {k: meta[keys[(i + 1) % len(keys)]] for i, k in enumerate(keys)}))
    else:  # flowers: the test images' labels in imagelabels.mat
        labels = loadmat(root / "flowers-102" / "imagelabels.mat")["labels"]
        test = loadmat(root / "flowers-102" / "setid.mat", squeeze_me=True)["tstid"] - 1
        labels[0, test] = labels[0, test] % 3 + 1
        savemat(root / "flowers-102" / "imagelabels.mat", {"labels": labels})


@pytest.mark.parametrize("name", ["food101", "flowers"])  # a carved and an official validation split
def test_corrupt_test_labels_change_no_chosen_cost(name, backbone, tmp_path):
    root, counts, classes = build(READER[name], tmp_path / "data")
    cfg = _config(name, root, counts, classes if name != "flowers" else 102)
    clean = _run(backbone, cfg, tmp_path / "a")
    _shuffle_test_labels(name, root)
    corrupt = _run(backbone, cfg, tmp_path / "b")
    assert corrupt.details["C"] == clean.details["C"]
    assert corrupt.details["val_curve"] == clean.details["val_curve"]
    metric = str(cfg.logreg.metric)
    assert corrupt.metrics[metric] < clean.metrics[metric] - 30  # the test labels were read, after the choice


def test_protocol_through_the_runner_records_a_result(backbone, tmp_path):
    root, counts, classes = build("dtd", tmp_path / "data")
    record = run_evaluation(backbone, _config("dtd", root, counts, classes), out_root=tmp_path / "runs", workers=0)
    assert record["status"] == "ok", record.get("error")
    assert record["evaluation"]["comparable"] is False  # a 32 px copy of 18 images is not the protocol
    assert record["metrics"]["top1"] > 60 and record["details"]["C"] > 0


def test_validation_carve_is_ssl_transfers():
    """np.random.seed(0); np.random.shuffle(list(range(n))); the first floor(0.2 n) indices validate."""
    np.random.seed(0)
    order = list(range(103))
    np.random.shuffle(order)
    fit, val = carve_validation(103, 0.2, 0)
    assert val.tolist() == order[:20] and fit.tolist() == order[20:]


def test_cost_grid_is_the_sources():
    grid = costs([-6, 5], 45)  # 1 / torch.logspace(-6, 5, 45)
    assert len(grid) == 45 and grid[0] == pytest.approx(1e6, rel=1e-6) and grid[-1] == pytest.approx(1e-5, rel=1e-6)
    assert grid[4] == pytest.approx(1 / 10 ** (-6 + 4 * 11 / 44), rel=1e-6)


def test_eleven_point_ap():
    """All positives ranked first: AP 1. Positives last among 4 items: the best precision at recall >= t is 0.5 for
    t = 0.1 .. 1, and 1 at t = 0 from the (recall 0, precision 1) point scikit-learn's curve ends with, as the
    source's voc_ap reads it: (1 + 10 x 0.5) / 11."""
    assert voc11_ap(np.array([0.9, 0.8, 0.1, 0.0]), np.array([1, 1, 0, 0])) == pytest.approx(1.0)
    assert voc11_ap(np.array([0.9, 0.8, 0.1, 0.0]), np.array([0, 0, 1, 1])) == pytest.approx(6 / 11)


# The costs ssl-transfer's run_linear.sh @ 3abd897cae5b4fa68b6e05f5a1837963ea8bbbba publishes as chosen for MoCo v1
# and v2 (its -c values: aircraft, caltech101, cars, cifar10, cifar100, dtd, flowers, food, pets, sun397, voc2007).
PUBLISHED_C = {"moco-v1": [5623.413277133687, 177827.94843157247, 1778.2794843157246, 177.8279410688207,
                           100000.00252621254, 316.2277690737784, 316227.7712565657, 56.23413185099295,
                           31622.77530666721, 316.2277690737784, 31.622778304361788],
               "moco-v2": [5623.413277133687, 316227.7712565657, 5623.413277133687, 316227.7712565657,
                           100.00000223517424, 1778.2794843157246, 31622.77530666721, 177827.94843157247,
                           999.999952502551, 100.00000223517424, 9.99999985098839]}


def test_every_cost_the_source_published_is_a_point_of_the_grid():
    grid = np.array(costs([-6, 5], 45))
    for chosen in PUBLISHED_C.values():
        for c in chosen:
            assert np.abs(grid - c).min() / c < 1e-6  # float32 logspace, as torch.logspace
