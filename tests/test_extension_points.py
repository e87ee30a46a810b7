"""docs/ARCHITECTURE.md held against the code: one reader, one protocol, one checkpoint layout and one command are
added here exactly as the document says (test-only: each registry is restored afterwards), and run through the
real entry points; every file the document names exists."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from moco_bench import cli
from moco_bench.convert import formats, load_backbone
from moco_bench.core.schema import MISSING
from moco_bench.data import registry as data_registry
from moco_bench.data.check import check_data
from moco_bench.data.images import load_rgb
from moco_bench.data.registry import SplitReader, register_reader
from moco_bench.engine.runner import run_evaluation
from moco_bench.evaluators import schema as evaluator_schema
from moco_bench.evaluators.base import EvalOutput
from moco_bench.evaluators.catalog import load_evaluation
from moco_bench.evaluators.features import load_pair, split_info
from moco_bench.evaluators.frozen.schema import FrozenEvaluation

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "ARCHITECTURE.md"


@pytest.fixture
def fresh_registries(monkeypatch):
    """Every registry as it is, restored after the test (the additions below are test-only)."""
    for reg in (data_registry.DATASETS[SplitReader], evaluator_schema.EVALUATORS, formats.FORMATS):
        monkeypatch.setattr(reg, "_items", dict(reg._items))
    monkeypatch.setattr(formats, "_ORDER", list(formats._ORDER))


class CSVImages(Dataset):
    """``<lists>/<split>.csv`` rows of ``path,label`` (paths relative to the image root), classes in
    ``<lists>/classes.txt``."""

    def __init__(self, lists: Path, root: Path, split: str, transform=None):
        with open(lists / f"{split}.csv", newline="") as f:
            rows = list(csv.reader(f))
        self.images = [str(root / p) for p, _ in rows]
        self.targets = [int(label) for _, label in rows]
        self.classes = (lists / "classes.txt").read_text().split()
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = load_rgb(Path(self.images[i]))
        return (self.transform(img) if self.transform else img), self.targets[i]


def _csv_lists(imagefolder_root: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train_subset", "val"):
        folder = torchvision.datasets.ImageFolder(str(imagefolder_root / split))
        rows = [(str(Path(p).relative_to(imagefolder_root)), t) for p, t in folder.samples]
        with open(out / f"{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
    (out / "classes.txt").write_text("\n".join(folder.classes))


def test_a_new_reader(fresh_registries, imagefolder_root, tmp_path):
    lists = tmp_path / "lists"
    _csv_lists(imagefolder_root, lists)  # paths relative to the image tree

    @dataclass
    class CSVOptions:
        lists: str = MISSING  # the folder holding <split>.csv and classes.txt

    @register_reader("csv_list", CSVOptions)
    def csv_list(root, split, transform=None, *, classes=None, options):
        return CSVImages(Path(options.lists), Path(root), split, transform)

    cfg = load_evaluation(REPO / "evaluate" / "demo" / "imagenet_knn.yaml",
                          ["data.reader=csv_list", f"data.root={imagefolder_root}", "knn.k=[5]",
                           f"data.options={{lists: {lists}}}"])
    assert check_data(OmegaConf.to_container(cfg, resolve=True))["val"]["images"] == 100
    record = run_evaluation(load_backbone("random:resnet18_small_w0.5@0"), cfg, out_root=tmp_path, workers=0)
    assert record["status"] == "ok", record["error"]


@dataclass
class NCM:
    normalize: bool = MISSING


@dataclass
class NCMEvaluation(FrozenEvaluation):
    ncm: NCM = MISSING


def nearest_class_mean(backbone, cfg, ctx) -> EvalOutput:
    """Top-1 of the nearest (cosine) class mean of the train features."""
    train, test = load_pair(backbone, cfg, ctx, ["gap"])
    x, q = train.features["gap"], test.features["gap"]
    if cfg.ncm.normalize:
        x, q = x / np.linalg.norm(x, axis=1, keepdims=True), q / np.linalg.norm(q, axis=1, keepdims=True)
    means = np.stack([x[train.labels == c].mean(0) for c in range(len(train.classes))])
    top1 = float(((q @ means.T).argmax(1) == test.labels).mean() * 100)
    return EvalOutput(metrics={"top1": top1}, info=split_info(cfg, train, test, ["gap"]))


def test_a_new_protocol(fresh_registries, imagefolder_root, tmp_path):
    evaluator_schema.register_evaluator("ncm", NCMEvaluation, lambda: nearest_class_mean)
    # The config: the demo kNN protocol's files with the kNN block replaced by the new one.
    base = OmegaConf.load(REPO / "evaluate" / "imagenet_knn.yaml")
    del base["knn"]
    (tmp_path / "imagenet_knn.yaml").write_text(OmegaConf.to_yaml(base))
    demo = OmegaConf.load(REPO / "evaluate" / "demo" / "imagenet_knn.yaml")  # its kNN block is the base's
    demo.base = "imagenet_knn.yaml"
    demo.update({"evaluator": "ncm", "name": "ncm_demo", "benchmark": "fmnist_ncm", "ncm": {"normalize": True},
                 "comparability": {"protocol": None}})
    path = tmp_path / "ncm_demo.yaml"
    path.write_text(OmegaConf.to_yaml(demo))
    cfg = load_evaluation(path, [f"data.root={imagefolder_root}"])
    record = run_evaluation(load_backbone("random:resnet18_small_w0.5@0"), cfg, out_root=tmp_path, workers=0)
    assert record["status"] == "ok", record["error"]
    assert 10.0 < record["metrics"]["top1"] <= 100.0 and record["evaluation"]["comparable"] is False


def test_a_new_checkpoint_layout(fresh_registries, tmp_path):
    formats.register_format(formats.Format(
        name="test-trunk", description="a made-up trainer: {'trunk': {'encoder.<torchvision key>': tensor}}",
        locate=lambda ckpt: ("trunk", ckpt["trunk"]) if "trunk" in ckpt else None,
        copies=(formats.Copy("model", "encoder", "backbone"),), reference="its evaluation loads trunk.encoder",
        epochs=lambda ckpt: formats.Epochs(None, "this layout records no epoch"), signals=("encoder.conv1",)))
    net = torchvision.models.resnet18()
    path = tmp_path / "trunk.pth"
    torch.save({"trunk": {f"encoder.{k}": v for k, v in net.state_dict().items() if not k.startswith("fc.")}}, path)
    backbone = load_backbone(path)
    assert backbone.format == "test-trunk" and backbone.arch == "resnet18"
    assert torch.equal(backbone.state_dict["layer4.1.bn2.weight"], net.state_dict()["layer4.1.bn2.weight"])


def test_a_new_command(capsys):
    class Hello:
        @staticmethod
        def register(sub):
            p = sub.add_parser("hello", help="say hello")
            p.add_argument("name")
            p.set_defaults(func=lambda args: print(f"hello {args.name}") or 0)

    args = cli.build_parser(cli.COMMANDS + (Hello,)).parse_args(["hello", "world"])
    assert args.func(args) == 0 and capsys.readouterr().out == "hello world\n"


def test_every_file_the_architecture_document_names_exists():
    text = DOC.read_text()
    named = set(re.findall(r"`((?:moco_bench|tests|evaluate|suites|pretrain|docs)/[^`<>*]+\.(?:py|yaml|md))`", text))
    assert len(named) >= 12
    missing = sorted(p for p in named if not (REPO / p).is_file())
    assert not missing, missing
    for name in ("register_reader", "register_source", "register_evaluator", "register_format", "COMMANDS"):
        assert name in text
