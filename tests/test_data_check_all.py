"""`moco-bench data check` on every shipped protocol, its datasets pointed at the embedded sets by key=value
overrides (as a researcher points them at their copies): every split or source is opened and checked through the
one dataset registry, and the embedded copies (other image counts than the published ones) are not comparable."""

from __future__ import annotations

from pathlib import Path

import pytest

from moco_bench.cli import main
from moco_bench.data import embedded
from moco_bench.data.minicityscapes import build_minicityscapes
from moco_bench.data.minilvis import build_minilvis
from moco_bench.data.minivocseg import build_minivocseg
from moco_bench.evaluators.catalog import load_evaluation

EVALUATE = Path(__file__).resolve().parents[1] / "evaluate"
PROTOCOLS = sorted(p.stem for p in EVALUATE.glob("*.yaml")
                   if load_evaluation(p).comparability.get("protocol") == p.stem)
CLASSES = "[" + ",".join(embedded.FASHION_CLASSES) + "]"


@pytest.fixture(scope="module")
def sets(data_cache, minivoc_root):
    root = data_cache / "embedded"
    voc = embedded.build_minivoc(root / "minivoc_tiny", n_trainval=8, n_test=20)
    return {"imagefolder": embedded.build_imagefolder(root / "imagefolder_tiny", train_per_class=3, val_per_class=2,
                                                      size=32),
            "voc": minivoc_root, "voc_tiny": voc, "coco_tiny": embedded.build_minicoco(voc, root / "minicoco_tiny"),
            "lvis": build_minilvis(root / "minilvis_tiny", n_train=10, n_val=4, frequency_images=[1, 2]),
            "cityscapes": build_minicityscapes(root / "minicityscapes_tiny", n_train=3, n_val=2),
            "vocseg": build_minivocseg(root / "minivocseg_tiny", n_train=3, n_val=2, n_extra=1)}


def _splits(cfg, sets) -> list:
    """A classification protocol's data block on the embedded tree (or mini-VOC), read by a folder reader (Places205's
    own reader in its folder layout)."""
    voc, places = cfg.data.reader == "voc", cfg.data.reader == "places205"
    reader = "voc" if voc else "places205" if places else "imagefolder"
    return [f"data.root={sets['voc'] if voc else sets['imagefolder']}", f"data.classes={CLASSES if voc else 10}",
            "data.expect=null", f"data.reader={reader}", "data.train_split=" + ("trainval" if voc else "train"),
            "data.test_split=" + ("test" if voc else "val")] + (["data.options.layout=folder"] if places else [])


def _source(name: str, spec, is_test: bool, sets) -> list:
    key = f"datasets.sources[{name}]" if "." in name else f"datasets.sources.{name}"  # OmegaConf's dotlist syntax
    split = "test" if is_test else "trainval"
    half = "val" if is_test else "train"
    by_format = {
        "voc": {"root": sets["voc_tiny"]},
        "coco": {"json": f"{sets['coco_tiny']}/annotations/instances_{split}.json",
                 "image_root": f"{sets['coco_tiny']}/{split}"},
        "lvis": {"json": sets["lvis"] / "lvis" / f"lvis_v0.5_{half}.json", "image_root": sets["lvis"] / "coco"},
        "cityscapes": {"image_dir": sets["cityscapes"] / "leftImg8bit" / half,
                       "gt_dir": sets["cityscapes"] / "gtFine" / half},
        "voc_seg": {"root": sets["vocseg"]},
    }
    by_format["cityscapes_sem"] = by_format["cityscapes"]
    return [f"{key}.{k}={v}" for k, v in by_format[spec.format].items()] + [f"{key}.expect=null"]


def _detection(cfg, sets) -> list:
    out = []
    for name, spec in cfg.datasets.sources.items():
        if spec is not None:
            out += _source(name, spec, name in cfg.datasets.test, sets)
    formats = {s.format for s in cfg.datasets.sources.values() if s is not None}
    if "voc" in formats:
        out.append(f"datasets.classes={CLASSES}")
    if "voc_seg" in formats:
        out.append("datasets.classes=[background," + CLASSES[1:])
    return out


@pytest.mark.parametrize("name", PROTOCOLS)
def test_data_check_runs_on_every_shipped_protocol(name, sets, capsys):
    cfg = load_evaluation(EVALUATE / f"{name}.yaml")
    overrides = _detection(cfg, sets) if cfg.get("datasets") is not None else _splits(cfg, sets)
    assert main(["data", "check", name, *overrides]) == 0
    lines = capsys.readouterr().out.splitlines()
    read = cfg.datasets.train + cfg.datasets.test if cfg.get("datasets") is not None else ["train", "val"]
    checked = [line.split(":")[0] for line in lines if ": ok, " in line]
    assert set(checked) >= {str(n) for n in read if n not in ("train", "val")} and checked
    assert lines[-1].startswith("not comparable")  # embedded copies: not the published image counts


def test_a_misspelled_expect_key_is_an_error(capsys):
    assert main(["data", "check", "voc07_frcnn_c4_9k", "datasets.sources.voc_2007_test.expct=4952"]) == 2
    err = capsys.readouterr().err
    assert "datasets.sources.voc_2007_test" in err and "expct" in err and "its keys: format, root" in err
    assert main(["data", "check", "imagenet_knn", "data.expect.vall=50000"]) == 2
    assert "data.expect names ['vall'], not a split this config reads" in capsys.readouterr().err
    assert main(["data", "check", "lvis05_mrcnn_fpn_2x", "datasets.sources.lvis_v0.5_val.json=x.json"]) == 2
    assert "brackets: datasets.sources[lvis_v0.5_val].json=" in capsys.readouterr().err
