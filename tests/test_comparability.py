"""Comparability is derived from the config: a changed number makes a result not comparable and says which key;
a changed path, worker count or chunk size does not. Tables hold each result against the published row of its
own recipe and protocol, with the published spread."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from moco_bench.cli import main
from moco_bench.core.config import is_free
from moco_bench.core.env import environment
from moco_bench.core.schema import flatten
from moco_bench.engine.comparability import assess
from moco_bench.evaluators.catalog import load_evaluation
from moco_bench.results.published import load_published
from moco_bench.results.schema import make_record
from moco_bench.results.store import load_results, read_result, write_result
from moco_bench.results.tables import compile_tables

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).with_name("protocol_keys.json")


def _protocol_files():
    return sorted(p for p in (ROOT / "evaluate").glob("*.yaml")
                  if load_evaluation(p).comparability.get("protocol") == p.stem)


def test_every_protocol_key_has_a_decision():
    """Each key of a shipped protocol file is either free (listed, with a reason) or number-changing; a new key
    fails here until someone decides which, in the config and in tests/protocol_keys.json."""
    from omegaconf import OmegaConf

    expected = json.loads(FIXTURE.read_text())
    files = _protocol_files()
    assert sorted(p.stem for p in files) == sorted(expected)
    for path in files:
        cfg = load_evaluation(path)
        keys = {k for k in flatten(OmegaConf.to_container(cfg, resolve=False))
                if not k.startswith(("_source_", "comparability"))}
        free = dict(cfg.comparability.get("free_keys") or {})
        assert all(str(reason).strip() for reason in free.values()), f"{path.name}: a free key without its reason"
        assert sorted(free) == expected[path.stem]["free"], path.name
        changing = {k for k in keys if not is_free(k, free)}
        decided = set(expected[path.stem]["number_changing"])
        assert changing == decided, f"{path.name}: undecided {sorted(changing - decided)}, " \
                                    f"gone {sorted(decided - changing)}"
        assert assess(cfg)["comparable"] or cfg.comparability.get("requires"), path.name


def test_overrides_of_numbers_and_of_free_keys(tmp_path):
    linear = ROOT / "evaluate" / "imagenet_linear.yaml"
    changed = assess(load_evaluation(linear, ["schedule.epochs=10", "seed=3", "features.channels_last=true"]))
    assert changed["comparable"] is False
    assert changed["differences"] == {"schedule.epochs": {"protocol": 100, "run": 10}}
    assert set(changed["free_changes"]) == {"seed", "features.channels_last"}
    assert assess(load_evaluation(linear, ["seed=3"]))["comparable"] is True
    assert assess(load_evaluation(linear, ["data.root=/elsewhere/imagenet"]))["differences"]["data.root"] == {
        "protocol": "${datasets:imagenet}", "run": "/elsewhere/imagenet"}  # datasets move with $MOCO_BENCH_DATASETS
    lowshot = ROOT / "evaluate" / "voc07_lowshot_svm.yaml"
    default = assess(load_evaluation(lowshot))
    assert not default["comparable"] and set(default["unmet"]) == {"lowshot.cost_selection"}
    assert assess(load_evaluation(lowshot, ["lowshot.cost_selection=test"]))["comparable"]
    # a config cannot declare a key free for itself: the shipped protocol file's list is the one that counts
    text = linear.read_text().replace("  free_keys:", "  free_keys:\n    schedule.epochs: \"as I please\"")
    crafted = tmp_path / "crafted.yaml"
    crafted.write_text(text.replace("  epochs: 100", "  epochs: 10"))
    cheat = assess(load_evaluation(crafted))
    assert set(cheat["differences"]) == {"schedule.epochs"}
    demo = assess(load_evaluation(ROOT / "evaluate" / "demo" / "imagenet_knn.yaml"))
    assert not demo["comparable"] and "transform.test.crop" in demo["differences"]


@pytest.fixture(scope="module")
def knn_runs(imagefolder_root, tmp_path_factory):
    """The imagenet_knn protocol run through the CLI on a dataset root laid out as ImageNet (the embedded tree):
    once with numbers changed (and the dataset checks relaxed: 10 classes, no published image counts), once with
    only chunk sizes and a name changed, which the dataset check then stops (a partial copy of ImageNet)."""
    datasets = tmp_path_factory.mktemp("datasets")
    (datasets / "imagenet").symlink_to(imagefolder_root)
    out = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("MOCO_BENCH_DATASETS", str(datasets))
    config = str(ROOT / "evaluate" / "imagenet_knn.yaml")
    common = ["random:resnet18", "--config", config, "--device", "cpu", "--workers", "0", "features.batch_size=64"]
    assert main(["eval", *common, "--out", str(out / "changed"), "knn.k=[10,20]", "transform.test.crop=192",
                 "data.classes=10", "data.expect=null"]) == 0
    assert main(["eval", *common, "--out", str(out / "free"), "knn.query_chunk=64", "name=knn_free"]) == 1
    mp.undo()
    return out


def test_changed_number_in_record_and_table_note(knn_runs):
    changed = read_result(next((knn_runs / "changed").rglob("imagenet_knn.json")))
    ev = changed["evaluation"]
    assert changed["status"] == "ok" and ev["comparable"] is False
    assert {"knn.k", "transform.test.crop", "data.classes"} <= set(ev["comparability"]["differences"])
    assert "transform.test.crop 224 -> 192" in ev["comparability_note"]
    free = read_result(next((knn_runs / "free").rglob("knn_free.json")))
    assert free["evaluation"]["comparable"] is True and free["evaluation"]["comparability"]["differences"] == {}
    assert set(free["evaluation"]["comparability"]["free_changes"]) == {"knn.query_chunk", "features.batch_size",
                                                                        "name"}
    assert free["status"] == "failed" and "has 10 classes, the config expects 1000" in free["error"]
    tables = compile_tables(load_results(knn_runs), load_published())
    rows = pd.concat(tables.values())
    ours = rows[rows["row"] == "ours"]
    assert len(ours) == 4 and ours["delta"].isna().all()  # top1/top5 at k 10 and 20, none comparable
    assert ours["note"].str.contains("not comparable: ").all() and ours["note"].str.contains("knn.k").all()


def _record(folder, benchmark, protocol, metrics, recipe, comparable=True, layer="", name=None):
    name = name or benchmark
    rec = make_record(
        evaluation={"name": name, "protocol": "x", "config": {}, "benchmark": benchmark, "layer": layer,
                    "comparable": comparable, "published_protocol": protocol,
                    "comparability_note": "" if comparable else "not comparable: optim.lr 0.01 -> 0.1"},
        checkpoint={"path": f"/c/{recipe[0].replace(' ', '')}_{recipe[1]}.pth.tar", "sha256": "ab" * 32,
                    "format": "moco", "arch": "resnet50", "epochs": recipe[1],
                    "recipe": {"method": recipe[0], "epochs": recipe[1], "arch": "R50", "pretrain_data": "IN-1M"}},
        metrics=metrics, environment=environment(), timing={"start": "s", "end": "e", "seconds": {}})
    write_result(folder / recipe[0].replace(" ", "") / f"{name}.json", rec)


def test_reference_row_follows_the_recipe_and_the_protocol(tmp_path):
    runs = tmp_path / "runs"
    _record(runs, "voc07_svm", "fair-ssb svm feature5", {"mAP": 80.0}, ("MoCo v1", 200), layer="feature5")
    _record(runs, "imagenet_mhead_linear", "mmselfsup mhead 90ep", {"feature5_top1": 60.0}, ("MoCo v1", 200),
            name="mhead_v1")
    _record(tmp_path / "v2", "imagenet_mhead_linear", "mmselfsup mhead 90ep", {"feature5_top1": 66.0},
            ("MoCo v2", 200))
    _record(tmp_path / "v2", "imagenet_linear", "main_lincls lr30 100ep", {"top1": 67.55}, ("MoCo v2", 200))
    pub = load_published()
    tables = compile_tables(load_results(runs), pub)
    svm = tables["voc07_svm"].iloc[0]
    assert svm["delta"] == pytest.approx(80.0 - 79.18) and svm["reference"].startswith("MoCo v1 200ep")
    mhead_v1 = tables["imagenet_mhead_linear"]
    v1 = mhead_v1[mhead_v1["row"] == "ours"].iloc[0]
    # OpenSelfSup published MoCo v1 multi-head rows (60.6 at feature5), but under another protocol: no delta
    assert v1["reference"] == "" and pd.isna(v1["delta"]) and "no published 'mmselfsup mhead 90ep' row" in v1["note"]
    assert set(mhead_v1.loc[mhead_v1["row"] == "published", "protocol"]) == {"mmselfsup mhead 90ep"}
    v2 = compile_tables(load_results(tmp_path / "v2"), pub)
    mh = v2["imagenet_mhead_linear"].iloc[0]
    assert mh["delta"] == pytest.approx(66.0 - 66.24) and "mmselfsup-mocov2" in mh["reference"]
    lin = v2["imagenet_linear"].iloc[0]
    assert lin["reference"].endswith("67.5 +-0.1") and lin["within_spread"] == "within"
    forced = compile_tables(load_results(tmp_path / "v2"), pub, reference=("MoCo v1", "200"))
    lin = forced["imagenet_linear"].iloc[0]
    assert lin["delta"] == pytest.approx(67.55 - 60.8) and lin["within_spread"] == "outside"


def test_tables_cli_reference_option(tmp_path):
    _record(tmp_path / "runs", "imagenet_linear", "main_lincls lr30 100ep", {"top1": 61.0}, ("MoCo v2", 200))
    out = tmp_path / "report"
    assert main(["tables", str(tmp_path / "runs"), "-o", str(out), "--published", "--reference", "MoCo v1 200"]) == 0
    table = pd.read_csv(out / "tables" / "imagenet_linear.csv")
    assert table.loc[0, "delta"] == pytest.approx(0.2) and table.loc[0, "within_spread"] == "within"
    assert main(["tables", str(tmp_path / "runs"), "-o", str(out), "--reference", "MoCo v1"]) == 2


def test_checkpoint_recipe_from_its_keys_or_its_config(tmp_path):
    import torchvision
    from checkpoint_builders import make_moco_checkpoint

    from moco_bench.convert import load_backbone
    from moco_bench.convert.recipe import recipe_of

    r18 = torchvision.models.resnet18()
    v1 = load_backbone(make_moco_checkpoint(r18, tmp_path / "v1.pth.tar", mlp=False, epoch=200).path)
    v2 = load_backbone(make_moco_checkpoint(r18, tmp_path / "v2.pth.tar", mlp=True, epoch=800).path)
    assert (v1.recipe["method"], v1.recipe["epochs"], v1.recipe["arch"]) == ("MoCo v1", 200, "R18")
    assert (v2.recipe["method"], v2.recipe["epochs"]) == ("MoCo v2", 800)
    assert load_backbone("random:resnet50").record()["recipe"]["method"] == "random"
    bf16 = {"compute.precision": {"protocol": "fp32", "run": "bf16"}}
    ours = {"config": {"recipe": {"method": "MoCo v2", "pretrain_data": "IN-1M", "deviations": bf16}}, "state_dict": {}}
    assert recipe_of(ours, "moco", "resnet50", 120) == {
        "method": "MoCo v2", "epochs": 120, "arch": "R50", "pretrain_data": "IN-1M",
        "source": "the recipe block of the checkpoint's pretraining config", "deviations": bf16}
    assert recipe_of({}, "mmselfsup", "wide_resnet50_2", None)["arch"] == "wide_resnet50_2"
