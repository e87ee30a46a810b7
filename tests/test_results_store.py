"""The results store: schema validation, atomic writes, no silent overwrite, the pandas view."""

from __future__ import annotations

import json

import pytest

from moco_bench.core.env import environment
from moco_bench.core.errors import ResultExistsError
from moco_bench.results.schema import SchemaError, make_record, now
from moco_bench.results.store import load_results, read_result, write_result


def _record(value=80.0, status="ok", error=None):
    return make_record(
        evaluation={"name": "voc07_svm", "protocol": "voc07_svm", "config": {"svm": {"folds": 3}},
                    "dataset": "VOC2007", "layer": "feature5"},
        checkpoint={"path": "ckpt.pth", "sha256": "ab" * 32, "format": "moco", "arch": "resnet50"},
        metrics={"mAP": value} if status == "ok" else {},
        environment=environment(),
        timing={"start": now(), "end": now(), "seconds": {"svm": 1.5}},
        status=status,
        error=error,
    )


def test_write_refuses_to_overwrite_finished(tmp_path):
    path = tmp_path / "r" / "voc07_svm.json"
    write_result(path, _record(80.0))
    with pytest.raises(ResultExistsError, match="voc07_svm.json: a finished result is already there"):
        write_result(path, _record(10.0))
    assert read_result(path)["metrics"] == {"mAP": 80.0}
    write_result(path, _record(81.0), force=True)
    assert read_result(path)["metrics"] == {"mAP": 81.0}
    assert [p.name for p in path.parent.iterdir()] == ["voc07_svm.json"]  # no temporary files left


def test_failed_result_is_replaced(tmp_path):
    path = tmp_path / "voc07_svm.json"
    write_result(path, _record(status="failed", error="boom"))
    write_result(path, _record(70.0))
    assert read_result(path)["status"] == "ok"


def test_schema_rejects_bad_records():
    with pytest.raises(SchemaError, match="not finite"):
        _record(float("nan"))
    with pytest.raises(SchemaError, match="needs an 'error' text"):
        _record(status="failed")
    rec = _record()
    rec.pop("timing")
    with pytest.raises(SchemaError, match="missing field 'timing'"):
        write_result("unused.json", rec)


def test_environment_is_recorded():
    env = _record()["environment"]
    assert env["versions"]["torch"].startswith("2.") and "git_revision" in env and env["device"] == "cpu"


def test_load_results_skips_foreign_files(tmp_path):
    write_result(tmp_path / "a" / "voc07_svm.json", _record(80.0))
    (tmp_path / "a" / "foreign.json").write_text(json.dumps({"hello": 1}))
    (tmp_path / "a" / "corrupt.json").write_text("{")
    work = tmp_path / "a" / "voc07_svm" / "trial0"  # the evaluation's work folder: its files are not results
    work.mkdir(parents=True)
    (work / "metrics.json").write_text('{"iteration": 1}\n{"iteration": 2}\n')
    with pytest.warns(UserWarning, match="corrupt.json"):
        df = load_results(tmp_path)
    assert df[["evaluation", "metric", "value", "layer"]].values.tolist() == [["voc07_svm", "mAP", 80.0, "feature5"]]
    assert sorted(s["file"].rsplit("/", 1)[1] for s in df.attrs["skipped"]) == ["corrupt.json", "foreign.json"]
