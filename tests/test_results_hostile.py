"""Hostile results folders (issue 26, items 5 and 6 and the report.md one): a name that matplotlib would parse as
mathtext, one planted file (deeply nested JSON, a link to /dev/zero, a FIFO), HTML in names and values. Each runs
``moco-bench tables`` in a child under a memory cap and a timeout, so a regression fails fast instead of taking the
machine; each ends with the report written for the good records and one line naming the bad file. Crafted
per-example outputs beside a record (the report's bootstrap reads them) are tried the same way."""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moco_bench.core.env import environment
from moco_bench.results.schema import make_record
from moco_bench.results.store import write_result

ROOT = Path(__file__).resolve().parents[1]
MEMORY_CAP = 1536 << 20  # `tables` on a good folder peaks under 1 GiB of address space
TIMEOUT = 60


def _record(folder: Path, *, ckpt: str = "/ckpts/mocov2.pth.tar", dataset: str = "Fashion-MNIST", name: str = "knn",
            metrics=None, status: str = "ok") -> Path:
    rec = make_record(
        evaluation={"name": name, "protocol": "knn", "config": {}, "benchmark": "fmnist_knn", "dataset": dataset,
                    "layer": "gap", "comparable": False, "comparability_note": "not comparable: a test"},
        checkpoint={"path": ckpt, "sha256": "ab" * 32, "format": "moco", "arch": "resnet18", "epochs": 1},
        metrics=(metrics or {"top1@k10": 61.0, "top1@k20": 60.0}) if status == "ok" else {},
        environment=environment(), timing={"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-01T00:01:00+00:00",
                                           "seconds": {}},
        status=status, error=None if status == "ok" else "RuntimeError: <script>alert(3)</script>")
    return write_result(folder / f"{name}.json", rec)


def _tables(runs: Path, out: Path) -> subprocess.CompletedProcess:
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "moco_bench", "tables", str(runs), "-o", str(out)], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT, preexec_fn=cap)


@pytest.mark.parametrize("where", ["checkpoint file name", "data.name"])
def test_mathtext_in_a_name_is_drawn_as_typed(where, tmp_path):
    """Fails 5: ``$\\notacommand$`` in a checkpoint's file name or a dataset's name made matplotlib raise."""
    evil = r"$\notacommand$"
    if where == "data.name":
        _record(tmp_path / "runs" / "a", dataset=evil)
    else:
        _record(tmp_path / "runs" / "a", ckpt=f"/ckpts/{evil}.pth.tar")
    proc = _tables(tmp_path / "runs", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list((tmp_path / "out" / "plots").glob("*.png"))) == 1
    assert evil in (tmp_path / "out" / "report.html").read_text()


def _nested(path: Path) -> None:
    path.write_text('{"schema": 1, "evaluation": ' + "[" * 200_000 + "]" * 200_000 + "}")


def _dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _fifo(path: Path) -> None:
    os.mkfifo(path)


@pytest.mark.parametrize("plant, why", [
    (_nested, "not a moco-bench result: JSON nested deeper than a record ever is"),
    (_dev_zero, "a character device, not a regular file"),
    (_fifo, "a FIFO, not a regular file"),
])
def test_one_planted_file_is_listed_and_the_report_is_written_for_the_rest(plant, why, tmp_path):
    """Fails 6: deeply nested JSON (RecursionError), a ``*.json`` link to /dev/zero (MemoryError after GBs), a FIFO
    named ``*.json`` (a hang) each broke ``tables`` for every record beside them."""
    _record(tmp_path / "runs" / "a")
    planted = tmp_path / "runs" / "a" / "planted.json"
    plant(planted)
    proc = _tables(tmp_path / "runs", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "planted.json" in line]
    assert lines == [f"moco-bench: skipping {planted}: {why}" + (" (not a moco-bench result)" if plant != _nested
                                                                  else "")]
    skipped = pd.read_csv(tmp_path / "out" / "tables" / "not_results.csv")
    assert skipped["file"].tolist() == [str(planted)] and why in skipped["reason"].iloc[0]
    assert "top1@k20" in (tmp_path / "out" / "report.md").read_text()


def test_markdown_report_shows_html_from_records_as_text(tmp_path):
    """Weak: report.md carried raw ``<img onerror=...>`` from names and values (the page escaped them)."""
    runs = tmp_path / "runs"
    _record(runs / "a", ckpt="/ckpts/<img src=x onerror=alert(1)>.pth", dataset="<img src=x onerror=alert(2)>",
            metrics={"top1@k20": 60.0, "<b>k</b>|x": 1.0})
    _record(runs / "a", name="svm", status="failed")
    proc = _tables(runs, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    texts = [(tmp_path / "out" / "report.md").read_text()] + [p.read_text() for p in
                                                               (tmp_path / "out" / "tables").glob("*.md")]
    for text in texts:
        assert "<img" not in text and "<script" not in text and "<b>" not in text
    report = texts[0]
    assert "&lt;img src=x onerror=alert(1)>" in report and "&lt;script>" in report
    assert r"&lt;b>k&lt;/b>\|x" in report  # a pipe in a name does not split its table's cells


def _npz(members: dict, compress: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compress) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _npy(header: dict, body: bytes) -> bytes:
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, header)
    return f.getvalue() + body


def _object_array() -> bytes:
    f = io.BytesIO()
    np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return f.getvalue()


SIDECARS = {  # a crafted examples file (its record names it with its true sha256) -> what the report says
    "claims a huge array": (lambda: _npz({"m0_hits.npy": _npy({"descr": "|u1", "fortran_order": False,
                                                               "shape": (10**12,)}, b"\0" * 8)}),
                            "member m0_hits.npy claims shape (1000000000000,) of uint8, which its size does not hold"),
    "deflated zeros": (lambda: _npz({"m0_hits.npy": _npy({"descr": "|u1", "fortran_order": False,
                                                          "shape": (8 << 20,)}, bytes(8 << 20))},
                                    zipfile.ZIP_DEFLATED), "member m0_hits.npy is compressed or not an .npy array"),
    "a pickled object": (lambda: _npz({"m0_hits.npy": _object_array()}), "not a plain number array"),
    "too few hits": (lambda: _npz({"m0_hits.npy": _npy({"descr": "|u1", "fortran_order": False, "shape": (1,)},
                                                       b"\xff")}), "hits of top1@k20 do not hold 100 test images"),
}


@pytest.mark.parametrize("craft", sorted(SIDECARS))
def test_a_crafted_examples_file_costs_its_interval_not_the_report(craft, tmp_path):
    """The per-example outputs beside a record are checked before a byte becomes an array: a member claiming a
    terabyte, a deflate bomb, a pickle, or arrays of the wrong size give one line naming the file, and the result is
    shown without its interval."""
    make, why = SIDECARS[craft]
    record = _record(tmp_path / "runs" / "a")
    data = make()
    (tmp_path / "runs" / "a" / "knn.examples.npz").write_bytes(data)
    rec = json.loads(record.read_text())
    rec["examples"] = {"file": "knn.examples.npz", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                       "images": 100, "images_sha256": "x", "metrics": {"top1@k20": {"kind": "accuracy", "key": "m0"}}}
    record.write_text(json.dumps(rec))
    proc = _tables(tmp_path / "runs", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (tmp_path / "out" / "report.md").read_text()
    problem = report[report.index("## Results without an interval"):].splitlines()[2]
    assert problem.startswith(f"- no interval from {tmp_path / 'runs' / 'a' / 'knn.examples.npz'}: ") and why in problem
    assert "| top1@k20 | 60.00 " in report  # the value is still there, without an interval


def test_an_examples_file_changed_after_the_run_or_swapped_for_a_device_is_named(tmp_path):
    record = _record(tmp_path / "runs" / "a")
    rec = json.loads(record.read_text())
    rec["examples"] = {"file": "knn.examples.npz", "bytes": 1, "sha256": "0" * 64, "images": 100,
                       "images_sha256": "x", "metrics": {"top1@k20": {"kind": "accuracy", "key": "m0"}}}
    record.write_text(json.dumps(rec))
    sidecar = tmp_path / "runs" / "a" / "knn.examples.npz"
    sidecar.write_bytes(_npz({}))
    assert "its sha256 differs from the record's (changed after the run)" in _report_of(tmp_path)
    sidecar.unlink()
    sidecar.symlink_to("/dev/zero")
    assert f"{sidecar}: a character device, not a regular file" in _report_of(tmp_path)


def _report_of(tmp_path: Path) -> str:
    proc = _tables(tmp_path / "runs", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return (tmp_path / "out" / "report.md").read_text()
