"""Weighted kNN: equal to a plain torch implementation of the vote, every k from one search, bad input,
and the evaluator end to end on the embedded ImageFolder."""

from pathlib import Path

import numpy as np
import pytest
import torch

from moco_bench import evaluators
from moco_bench.convert import load_backbone
from moco_bench.core.errors import ConfigError, DataError
from moco_bench.evaluators.base import EvalContext
from moco_bench.evaluators.catalog import load_evaluation
from moco_bench.evaluators.neighbours import knn_multi_k, knn_top1

EVALUATE = Path(__file__).resolve().parent.parent / "evaluate"


def clusters(n, classes=10, d=32, seed=0):
    rng, centers = np.random.default_rng(seed), np.random.default_rng(7).standard_normal((classes, d))
    labels = rng.integers(0, classes, n)
    return (centers[labels] + 1.3 * rng.standard_normal((n, d))).astype(np.float32), labels


def torch_reference(train, train_labels, val, val_labels, k, T, classes):
    """DINO's ``knn_classifier`` (mmselfsup's copy) written independently in plain torch: full similarity
    matrix, topk, a one-hot of the neighbours' labels times exp(sim / T) summed over neighbours, one sort of all
    classes; top-5 counts the target among the first min(5, k) classes, votes or not."""
    train = torch.nn.functional.normalize(torch.from_numpy(train), dim=1)
    val = torch.nn.functional.normalize(torch.from_numpy(val), dim=1)
    sims, idx = (val @ train.T).topk(k, dim=1)
    one_hot = torch.zeros(len(val) * k, classes).scatter_(1, torch.from_numpy(train_labels)[idx].view(-1, 1), 1)
    votes = torch.sum(one_hot.view(len(val), -1, classes) * sims.clone().div_(T).exp_().view(len(val), -1, 1), 1)
    _, pred = votes.sort(1, True)
    correct = pred.eq(torch.from_numpy(val_labels).view(-1, 1))
    return (100.0 * correct.narrow(1, 0, 1).sum().item() / len(val),
            100.0 * correct.narrow(1, 0, min(5, k)).sum().item() / len(val))


def test_every_k_from_one_search_equals_the_plain_vote():
    train, train_labels = clusters(300)
    val, val_labels = clusters(120, seed=1)
    ks = [1, 3, 10, 20, 100, 200]
    # tiny chunks: the train stream is merged in faiss' ResultHeap across 9 chunks, queries in 8 chunks
    res = knn_multi_k(train, train_labels, val, val_labels, ks, 0.07, 10, query_chunk=16, train_chunk=37)
    assert list(res) == ks
    for k in ks:
        ref = torch_reference(train, train_labels, val, val_labels, k, 0.07, 10)
        assert res[k] == ref, k
    assert 20 < res[20][0] < 100 and res[20][1] >= res[20][0]
    assert res[1][0] == res[1][1]  # top-5 of a single neighbour is its top-1, as in the reference
    one = knn_multi_k(train, train_labels, val, val_labels, [20], 0.07, 10)
    assert one[20] == res[20]


def test_top5_counts_classes_without_votes_as_the_reference_does():
    """Tight clusters of 40 classes (25 train images each): every query's 20 neighbours come from fewer than five
    classes, so top-5 slots are filled by classes without votes, in torch.sort's order, as in the reference."""
    rng = np.random.default_rng(5)
    centers = 3.0 * rng.standard_normal((40, 64)).astype(np.float32)
    train_labels, val_labels = np.arange(1000) % 40, rng.integers(0, 40, 200)
    train = centers[train_labels] + 0.3 * rng.standard_normal((1000, 64)).astype(np.float32)
    val = centers[val_labels] + 0.3 * rng.standard_normal((200, 64)).astype(np.float32)
    val_labels = (val_labels + np.arange(200) % 3) % 40  # two thirds of the targets get no vote at all
    sims = (val / np.linalg.norm(val, axis=1, keepdims=True)) @ (train / np.linalg.norm(train, axis=1,
                                                                                      keepdims=True)).T
    voted = [len(set(train_labels[np.argsort(-row)[:20]])) for row in sims]
    assert max(voted) < 5  # the premise: fewer than five voted classes per row at k 20
    ks = [1, 2, 4, 10, 20]
    res = knn_multi_k(train, train_labels, val, val_labels, ks, 0.07, 40)
    for k in ks:
        assert res[k] == torch_reference(train, train_labels, val, val_labels, k, 0.07, 40), k
    assert res[10][1] > res[10][0] + 10  # targets without votes reach the top 5 by rank alone


def test_torch_search_finds_the_same_neighbours_as_faiss(monkeypatch):
    """The torch search (CPU default) against faiss' (the search of earlier versions, kept for GPUs), on tie-free
    data, with chunks and similarity blocks small enough that every merge path runs."""
    faiss = pytest.importorskip("faiss")
    from moco_bench.evaluators import search

    train, _ = clusters(500, d=48)
    val, _ = clusters(90, d=48, seed=1)
    monkeypatch.setattr(search, "BLOCK", 37 * 40)  # 40 query rows per similarity block of a 37-row train chunk
    runs = {b: search.search(train, val, 60, query_chunk=64, train_chunk=37, backend=b) for b in ("torch", "faiss")}
    assert np.array_equal(runs["torch"][1], runs["faiss"][1])
    np.testing.assert_allclose(runs["torch"][0], runs["faiss"][0], atol=1e-6)
    assert np.all(np.diff(runs["torch"][0], axis=1) <= 0) and runs["torch"][1].min() >= 0
    ref = faiss.knn(search.normalized(val.copy(), 0, "val"), search.normalized(train.copy(), 0, "train"), 60,
                    metric=faiss.METRIC_INNER_PRODUCT)[1]
    assert np.array_equal(runs["torch"][1], ref)  # one unchunked search agrees too
    assert search.choose_backend("auto", "cpu") == "torch"


def test_knn_top1_takes_torch_tensors():
    train, train_labels = clusters(200)
    val, val_labels = clusters(50, seed=1)
    top1 = knn_top1(torch.from_numpy(train), torch.from_numpy(train_labels), torch.from_numpy(val),
                    torch.from_numpy(val_labels), 20, 0.07)
    assert top1 == pytest.approx(torch_reference(train, train_labels, val, val_labels, 20, 0.07, 10)[0])


def test_bad_input():
    train, train_labels = clusters(30)
    val, val_labels = clusters(10, seed=1)
    with pytest.raises(ConfigError, match="larger than the training set"):
        knn_multi_k(train, train_labels, val, val_labels, [10, 31], 0.07)
    val[4, 3] = np.inf
    with pytest.raises(DataError, match=r"rows \[4\]"):
        knn_multi_k(train, train_labels, val, val_labels, [10], 0.07)


def test_knn_evaluator_end_to_end(imagefolder_root, tmp_path):
    cfg = load_evaluation(EVALUATE / "demo/imagenet_knn.yaml", [f"data.root={imagefolder_root}"])
    ctx = EvalContext(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", workers=1)
    out = evaluators.get("knn")(load_backbone("random:resnet18"), cfg, ctx)
    assert set(out.metrics) == {f"top{t}@k{k}" for t in (1, 5) for k in (10, 20, 100, 200)}
    assert all(0 <= v <= 100 for v in out.metrics.values())
    assert out.metrics["top1@k20"] > 10  # 10 classes: a random ResNet-18's GAP still clusters Fashion-MNIST
    assert out.info["layer"] == "gap" and out.details["peak_rss_mib"] > 0
    with pytest.raises(ConfigError, match="larger than the training set"):  # 200 train images
        evaluators.get("knn")(load_backbone("random:resnet18"), load_evaluation(
            EVALUATE / "demo/imagenet_knn.yaml", [f"data.root={imagefolder_root}", "knn.k=[10,201]"]), ctx)
