"""Shared fixtures: small embedded datasets in the real on-disk formats, built once per test session
under a temporary cache (``MOCO_BENCH_DATA``), so no test touches the user's cache."""

from __future__ import annotations

import os

import pytest
import torch

from moco_bench.data import embedded


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One intra-op thread: the tests' networks are tiny, and on a small shared machine two threads wait on each
    other (a ResNet-18 pass went from 50 ms to 600 ms); DataLoader workers and gloo ranks use the other core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("moco-bench-cache")
    old = os.environ.get("MOCO_BENCH_DATA")
    os.environ["MOCO_BENCH_DATA"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("MOCO_BENCH_DATA", None)
    else:
        os.environ["MOCO_BENCH_DATA"] = old


@pytest.fixture(scope="session")
def imagefolder_root(data_cache):
    """10 classes, 20 train / 10 val images per class, 32x32 PNG."""
    return embedded.build_imagefolder(data_cache / "embedded" / "imagefolder", train_per_class=20, val_per_class=10,
                                      size=32)


@pytest.fixture(scope="session")
def minivoc_root(data_cache):
    """The VOCdevkit/VOC2007 folder of a 40 + 40 image mini-VOC."""
    return embedded.build_minivoc(data_cache / "embedded" / "minivoc", n_trainval=40, n_test=40)


@pytest.fixture(scope="session")
def minicoco_root(data_cache, minivoc_root):
    return embedded.build_minicoco(minivoc_root, data_cache / "embedded" / "minicoco")
