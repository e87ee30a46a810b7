"""Every shipped paper protocol against its reference's values (tests/protocol_references.yaml): the evaluation
config the suite resolves, the detectron2 config its evaluator builds, the model that config builds (layer shapes)
and the linear protocols' lr and validation epochs as the training loop steps them. A changed value in a config
fails here until the table changes too, naming why; a changed value in a copy of the configs is found by the same
check."""

from __future__ import annotations

import importlib.util
import math
import shutil
from functools import lru_cache
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from moco_bench.evaluators.catalog import load_evaluation
from moco_bench.pretrain.schema import load_recipe

REPO = Path(__file__).resolve().parents[1]
TABLE = yaml.safe_load((Path(__file__).with_name("protocol_references.yaml")).read_text())
HAS_D2 = importlib.util.find_spec("detectron2") is not None
DERIVED = ("lr_per_epoch", "val_epochs")


def _plain(value):
    """Tuples (detectron2's YAML) as lists, so that the table's YAML lists compare equal."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _same(got, want) -> bool:
    got, want = _plain(got), _plain(want)
    if isinstance(want, float) or isinstance(got, float):
        return isinstance(got, (int, float)) and not isinstance(got, bool) and math.isclose(got, want, rel_tol=1e-9)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want)
    return got == want


def _load(entry: dict, root: Path):
    path = root / entry["file"]
    if entry["file"].startswith("pretrain/"):
        return load_recipe(path, entry.get("overrides"))
    return load_evaluation(path, entry.get("overrides"))


def _linear(cfg, key: str):
    from moco_bench.evaluators.linear.train import TrainConfig

    tc = TrainConfig.from_config(cfg)
    if key == "val_epochs":
        validated = [e for e in range(1, tc.epochs + 1) if tc.validates(e)]
        every = validated[0] if len(validated) > 1 else tc.epochs
        return {"every": every, "last": validated[-1]} if validated == sorted(
            set(range(every, tc.epochs + 1, every)) | {tc.epochs}) else validated
    runs = []
    for lr in tc.lr_per_epoch():
        if runs and math.isclose(runs[-1][1], lr, rel_tol=1e-9):
            runs[-1][0] += 1
        else:
            runs.append([1, lr])
    return runs


def _d2(cfg, root: Path):
    """The detectron2 config the protocol's evaluator builds on a ResNet-50, read from ``root``'s detectron2
    files."""
    from moco_bench.evaluators.detection.detection import detection_task, protocol_d2_config
    from moco_bench.evaluators.segmentation.semseg import semseg_task

    cfg = OmegaConf.merge(cfg, {"d2_config": str(root / cfg.d2_config)})
    task = semseg_task() if cfg.evaluator == "detectron2_semseg" else detection_task()
    return protocol_d2_config(cfg, "resnet50", task)


@lru_cache(maxsize=None)
def _model(name: str):
    """The model of the shipped protocol on the CPU, SyncBN made runnable in one process (the same layers)."""
    from detectron2.modeling import build_model

    from moco_bench.evaluators.detection import model as d2_model

    d2 = _d2(_load(TABLE["protocols"][name], REPO), REPO)
    d2.merge_from_list(["MODEL.DEVICE", "cpu"])
    d2_model.usable_norms(d2, world_size=1, device="cpu")
    return build_model(d2)


def _value(name: str, cfg, key: str, root: Path, d2=None):
    if key in DERIVED:
        return _linear(cfg, key)
    kind, _, path = key.partition(":") if ":" in key else ("", "", key)
    if kind == "d2":
        node = d2 if d2 is not None else _d2(cfg, root)
        for part in path.split("."):
            node = node[part]
        return node
    if kind == "shape":
        return list(_model(name).state_dict()[path].shape)
    if kind == "model":
        module, _, attr = path.rpartition(".")
        return getattr(_model(name).get_submodule(module), attr)
    return OmegaConf.to_container(OmegaConf.create({"v": OmegaConf.select(cfg, path, default="(absent)")}),
                                  resolve=True)["v"]


def mismatches(name: str, root: Path = REPO) -> list[str]:
    """Every row of ``name``'s table whose value the suite does not resolve or build, with the row's source."""
    entry = TABLE["protocols"][name]
    cfg = _load(entry, root)
    d2 = _d2(cfg, root) if "d2_config" in cfg and cfg.evaluator != "densepose" else None
    out = []
    for key, want, source in entry["values"]:
        if root != REPO and key.startswith(("shape:", "model:")):
            continue  # the models are built from the shipped files only
        got = _value(name, cfg, key, root, d2)
        if not _same(got, want):
            out.append(f"{name}: {key} is {_plain(got)!r}, the reference {want!r} ({source})")
    return out


def _needs_d2(name: str):
    entry = TABLE["protocols"][name]
    d2_rows = any(row[0].startswith(("d2:", "shape:", "model:")) for row in entry["values"])
    return pytest.mark.skipif(d2_rows and not HAS_D2, reason="detectron2 is not installed (make setup installs it)")


@pytest.mark.parametrize("name", [pytest.param(n, marks=_needs_d2(n)) for n in TABLE["protocols"]])
def test_protocol_holds_its_reference_values(name, monkeypatch):
    monkeypatch.setenv("MOCO_BENCH_DATASETS", "/datasets")
    assert not mismatches(name), "\n".join(mismatches(name))


def test_every_shipped_paper_protocol_has_a_table():
    """Each evaluation of the paper suite and each published pretraining recipe is held by a table; every row
    names a source from the table's list."""
    suite = yaml.safe_load((REPO / "suites" / "paper.yaml").read_text())
    shipped = {Path(e["config"]).stem for e in suite["evaluations"]} | {p.stem for p in (REPO / "pretrain").glob(
        "*_in1k_*.yaml")}
    assert shipped <= set(TABLE["protocols"]), sorted(shipped - set(TABLE["protocols"]))
    names = set(TABLE["sources"])
    for name, entry in TABLE["protocols"].items():
        for key, _, source in entry["values"]:
            assert source.split()[0].rstrip(":") in names, f"{name} {key}: source {source!r} names no listed source"


@pytest.mark.skipif(not HAS_D2, reason="detectron2 is not installed (make setup installs it)")
@pytest.mark.parametrize("file, old, new, protocol, key", [
    ("evaluate/imagenet_mhead_linear.yaml", "milestones: [30, 60, 90]", "milestones: [60, 80]",
     "imagenet_mhead_linear", "lr_per_epoch"),
    ("evaluate/imagenet_knn.yaml", "temperature: 0.07", "temperature: 0.1", "imagenet_knn", "knn.temperature"),
    ("evaluate/detectron2/Base-RCNN-C4-BN.yaml", "BASE_LR: 0.02", "BASE_LR: 0.01", "voc0712_frcnn_c4_24k",
     "d2:SOLVER.BASE_LR"),
    ("evaluate/detectron2/voc0712_frcnn_dc5_24k.yaml", "OUT_CHANNELS: 512", "OUT_CHANNELS: 2048",
     "voc0712_frcnn_dc5_24k", "d2:MODEL.DILATED_C5.OUT_CHANNELS"),
])
def test_a_changed_value_in_a_copy_of_the_configs_fails(file, old, new, protocol, key, tmp_path, monkeypatch):
    monkeypatch.setenv("MOCO_BENCH_DATASETS", "/datasets")
    for folder in ("evaluate", "pretrain"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    assert not mismatches(protocol, tmp_path)  # the copy as shipped holds its table
    path = tmp_path / file
    text = path.read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))
    found = mismatches(protocol, tmp_path)
    assert found and any(f"{protocol}: {key} is" in f for f in found), found
