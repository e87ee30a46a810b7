"""The report on real records (the demo's embedded-data evaluations of a MoCo-layout checkpoint and a random
baseline, run by eval-all), plus a few written by hand where the embedded data cannot go: a comparable ImageNet
result with a published spread, a raw-pixel baseline, a missing dataset. Checked: the HTML parses and is
self-contained, visible text holds no path, the pivoted summary has a column per checkpoint and a row per
(benchmark, metric) against the right reference, the evaluators' per-example outputs reproduce their metrics, no
plot mixes datasets and every series is visible in its own style, the LaTeX is booktabs with spreads, and Chromium
renders the page at 1280 and 800 px with the summary's key columns in view and plot text of 11 px or more."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.colors
import numpy as np
import pandas as pd
import pytest

from moco_bench.results import stats
from moco_bench.results.examples import load_examples
from moco_bench.results.plots import BASELINES, draw, figures
from moco_bench.results.published import PUBLISHED_DATASETS, load_published
from moco_bench.results.report import write_report
from moco_bench.results.store import load_results, read_result, write_result
from moco_bench.results.tables import NOT_HEADLINE, compile_tables

ROOT = Path(__file__).resolve().parents[1]
MOCO, RANDOM, V2, PIXELS = "MoCo v2 r18", "random init resnet18_small_w0.5", "mocov2_200ep", "raw pixels"  # labels
ABSOLUTE = re.compile(r"(?:^|[\s(\"'=,;:])~?/[\w.@+-]+/")  # /root/.cache/..., ~/data/...: a path on one machine


def _suite(path: Path) -> Path:
    demo = ROOT / "evaluate" / "demo"
    path.write_text(
        "version: 1\nname: report-test\nevaluations:\n"
        f"  - config: {demo / 'imagenet_knn.yaml'}\n"
        f"  - config: {demo / 'imagenet_knn.yaml'}\n    overrides: [benchmark=imagenet_knn, name=knn_as_imagenet]\n"
        f"  - config: {demo / 'voc07_svm.yaml'}\n    overrides: ['svm.costs=[0.1,1.0]']\n"
        f"  - config: {demo / 'voc07_lowshot_svm.yaml'}\n"
        "    overrides: ['svm.costs=[0.1,1.0]', 'lowshot.k=[1,2]', 'lowshot.seeds=[1]']\n"
        f"  - config: {demo / 'imagenet_linear.yaml'}\n"
        f"  - config: {ROOT / 'evaluate' / 'voc07_svm.yaml'}\n")  # VOC2007 is not there: skipped, with its path
    return path


def _by_hand(runs: Path, knn: Path) -> None:
    """A comparable ImageNet linear result of a MoCo v2 200ep R50 (published 67.5 +-0.1), an ImageNet kNN curve of
    it, and the raw-pixel baseline issue 13 adds (checkpoint ``pixels:``) on the demo's kNN."""
    rec = read_result(knn)
    rec["evaluation"].update(benchmark="imagenet_knn", dataset="ImageNet", dataset_root="/data/imagenet",
                             comparable=True, comparability_note="the published protocol (evaluate/imagenet_knn.yaml)",
                             comparability={"protocol": "imagenet_knn", "differences": {}, "unmet": {}},
                             published_protocol="weighted kNN T0.07 GAP", name="imagenet_knn")
    rec["checkpoint"].update(path="/ckpts/mocov2_200ep.pth.tar", sha256="ab" * 32,
                             recipe={"method": "MoCo v2", "epochs": 200, "arch": "R50", "pretrain_data": "IN-1M"})
    del rec["checkpoint"]["label"]  # as a record from before --label: named by the default
    del rec["examples"]  # numbers made up here: no per-example outputs of them
    rec["metrics"] = {"top1@k20": 55.0, "top1@k200": 53.0}
    folder = runs / "mocov2_200ep-abababab"
    write_result(folder / "imagenet_knn.json", rec)
    linear = copy.deepcopy(rec)
    linear["evaluation"].update(benchmark="imagenet_linear", name="imagenet_linear",
                                published_protocol="main_lincls lr30 100ep")
    linear["metrics"] = {"top1": 67.55, "top5": 88.0}
    write_result(folder / "imagenet_linear.json", linear)
    pixels = read_result(knn)
    del pixels["examples"]
    pixels["checkpoint"].update(path="pixels:", sha256="0" * 64, recipe={"method": "raw pixels"}, label=PIXELS)
    write_result(runs / "pixels-00000000" / knn.name, pixels)


@pytest.fixture(scope="module")
def demo(imagefolder_root, minivoc_root, tmp_path_factory):
    from checkpoint_builders import DEMO_ARCH, make_moco_checkpoint

    from moco_bench.engine.eval_all import eval_all
    from moco_bench.engine.suite import load_suite
    from moco_bench.models import resnets

    tmp = tmp_path_factory.mktemp("report")
    ckpt = make_moco_checkpoint(resnets.build(DEMO_ARCH), tmp / "mocov2_r18.pth.tar", arch=DEMO_ARCH).path
    mp = pytest.MonkeyPatch()
    mp.setenv("MOCO_BENCH_DATASETS", str(tmp / "no-datasets"))
    suite = load_suite(_suite(tmp / "suite.yaml"))
    for checkpoint, label in ((str(ckpt), MOCO), (f"random:{DEMO_ARCH}", None)):
        eval_all(checkpoint, suite, out_root=tmp / "runs", workers=0, label=label)
    mp.undo()
    _by_hand(tmp / "runs", next((tmp / "runs").glob("mocov2_r18-*/knn_demo.json")))
    (tmp / "runs" / "notes.json").write_text("{}")
    with pytest.warns(UserWarning, match="notes.json"):
        report = write_report([tmp / "runs"], tmp / "report")
    return {"runs": tmp / "runs", "report": report.parent, "html": (report.parent / "report.html").read_text(),
            "checkpoint": str(ckpt)}


class _Page(HTMLParser):
    """Visible text (outside ``<details>``, ``<style>``, ``<script>``), every tag with its attributes, and the cells
    of the summary's rows (``<tr data-benchmark=...>``)."""

    def __init__(self):
        super().__init__()
        self.visible, self.tags, self.rows, self.heads = [], [], [], []
        self._hidden, self._in_row, self._in_cell, self._in_head = 0, False, False, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        self._hidden += tag in ("details", "style", "script")
        if tag == "tr" and "data-benchmark" in attrs:
            self.rows.append({"attrs": attrs, "cells": []})
            self._in_row = True
        elif tag in ("td", "th") and self._in_row:
            self.rows[-1]["cells"].append("")
            self._in_cell = True
        elif tag == "th" and "key" in attrs.get("class", "").split():
            self.heads.append("")
            self._in_head = True
        elif tag == "span" and attrs.get("class") == "ci":  # an interval, a column's "baseline": not the value
            self._in_head = self._in_cell = False

    def handle_endtag(self, tag):
        self._hidden -= tag in ("details", "style", "script")
        self._in_cell = self._in_cell and tag not in ("td", "th")
        self._in_head = self._in_head and tag != "th"
        self._in_row = self._in_row and tag != "tr"

    def handle_data(self, data):
        if not self._hidden:
            self.visible.append(data)
        if self._in_cell:
            self.rows[-1]["cells"][-1] += data.strip()
        if self._in_head:
            self.heads[-1] += data.strip()


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def test_page_is_self_contained_and_shows_no_paths(demo):
    page = _parse(demo["html"])
    srcs = [a["src"] for t, a in page.tags if "src" in a]
    assert len(srcs) == len(figures(_tables(demo))) >= 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(a["href"].startswith("#") for t, a in page.tags if "href" in a)
    assert not [t for t, a in page.tags if t in ("link", "iframe", "object", "embed")]
    assert "url(" not in demo["html"] and "@import" not in demo["html"]
    for path in (demo["checkpoint"], "/data/imagenet", str(demo["runs"])):  # present, but only in tooltips/details
        assert path in demo["html"]
    leaks = [t for t in page.visible if ABSOLUTE.search(t)]
    leaks += [f"{tag} {k}={v}" for tag, a in page.tags for k, v in a.items()
              if k != "title" and v and not v.startswith("data:") and ABSOLUTE.search(v)]
    assert not leaks
    text = " ".join(page.visible)
    assert "Fashion-MNIST (embedded)" in text and "mini-VOC (embedded)" in text


def _tables(demo):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compile_tables(load_results(demo["runs"]), load_published())


def test_summary_pivots_checkpoints_into_columns_against_the_right_reference(demo):
    page = _parse(demo["html"])
    assert page.heads == ["metric", MOCO, V2, RANDOM, PIXELS]  # trained checkpoints, then the baselines
    keys = [(r["attrs"]["data-benchmark"], r["attrs"]["data-dataset"], r["attrs"]["data-metric"]) for r in page.rows]
    assert len(keys) == len(set(keys))
    ours = pd.concat([t[t["row"] == "ours"].assign(table=n) for n, t in _tables(demo).items()])
    ours = ours[~ours["metric"].str.contains(NOT_HEADLINE)]
    assert set(keys) == set(zip(ours["table"], ours["dataset"], ours["metric"]))
    cells = {k: r["cells"] for k, r in zip(keys, page.rows)}
    # metric, then MoCo, v2, random, pixels; the differences to random (MoCo, v2, pixels); published; vs published
    linear = cells[("imagenet_linear", "ImageNet", "top1")]
    assert linear[0] == "top1" and linear[2] == "67.55" and linear[1] == linear[3] == linear[4] == "—"
    assert linear[8:] == ["67.5 ± 0.1", f"{V2} +0.05within ±0.1"]
    knn = cells[("imagenet_knn", "ImageNet", "top1@k20")]
    assert knn[2] == "55.00" and knn[8] == "55.7" and knn[9] == f"{V2} -0.70no spread published"
    on_fmnist = cells[("imagenet_knn", "Fashion-MNIST (embedded)", "top1@k20")]  # not comparable: no reference
    assert on_fmnist[8:] == ["—", ""] and on_fmnist[2] == on_fmnist[7] == "—"
    fmnist = cells[("fmnist_knn", "Fashion-MNIST (embedded)", "top1@k20")]
    values = [float(v) for v in (fmnist[1], fmnist[3], fmnist[4])]
    assert float(fmnist[5]) == pytest.approx(values[0] - values[1], abs=0.006)  # MoCo - random
    assert float(fmnist[7]) == pytest.approx(values[2] - values[1], abs=0.006)  # pixels - random
    page_html = demo["html"]
    row = page_html[page_html.index('data-benchmark="fmnist_knn" data-dataset="Fashion-MNIST (embedded)" '
                                    'data-metric="top1@k20"'):]
    row = row[:row.index("</tr>")]
    best = [float(v) for v in re.findall(r'<td class="num best[^"]*"[^>]*><strong>([\d.]+)</strong>', row)]
    assert best == [max(values)] * values.count(max(values))  # every value equal to the row's best, and no other
    text = " ".join(page.visible)
    assert "What the numbers say" in text and f"{MOCO} vs {RANDOM}: above on" in text
    assert "percentile bootstrap over its test images (1000 resamples, numpy seed 0" in text


def test_examples_reproduce_every_metric_they_are_kept_for(demo):
    """kNN, linear and the VOC07 SVM keep per-example outputs; from them each metric comes out as recorded."""
    kept = set()
    for path in demo["runs"].rglob("*.json"):
        rec = read_result(path) if path.name != "notes.json" else {}
        for metric, ex in (load_examples(path, rec["examples"]) if rec.get("examples") else {}).items():
            assert stats.statistic(ex)(np.arange(ex.n)) == pytest.approx(rec["metrics"][metric], abs=1e-9)
            kept.add((rec["evaluation"]["protocol"], ex.kind))
    assert kept == {("knn", "accuracy"), ("linear", "accuracy"), ("voc07_svm", "map")}


def test_not_comparable_reason_said_once_per_group(demo):
    html = demo["html"]
    section = html[html.index('id="b-fmnist-knn"'):html.index("</section>", html.index('id="b-fmnist-knn"'))]
    assert section.count("not comparable with evaluate/imagenet_knn.yaml") == 1  # two checkpoints, one group
    assert "transform.test.crop" in section and "what differs from the protocol" in section
    assert "not comparable:" not in " ".join(_parse(section).visible)  # the record's note is not repeated per row


def test_failed_and_skipped_listed_with_one_line_reasons(demo):
    html = demo["html"]
    problems = html[html.index('id="problems"'):]
    assert problems.count('class="badge skipped"') == 2  # VOC2007 missing, for each checkpoint
    assert "…/VOC2007" in problems or "…/no-datasets" in problems
    assert "notes.json" in html[html.index('id="not-results"'):]


def test_plots_never_mix_datasets(demo):
    figs = figures(_tables(demo))
    assert {(f.table.split(" [")[0], f.dataset, f.kind) for f in figs} >= {  # a [variant] gets its own table
        ("fmnist_knn", "Fashion-MNIST (embedded)", "knn"), ("imagenet_knn", "Fashion-MNIST (embedded)", "knn"),
        ("imagenet_knn", "ImageNet", "knn"), ("minivoc_lowshot_svm", "mini-VOC (embedded)", "lowshot")}
    for fig in figs:
        assert {s.dataset for s in fig.series} == {fig.dataset}, fig.key
        assert fig.dataset in fig.caption and "protocol" in fig.caption
    by = {(f.table, f.dataset): f for f in figs}
    assert {s.role for s in by[("imagenet_knn", "ImageNet")].series} == {"ours", "published"}
    as_imagenet = by[("imagenet_knn", "Fashion-MNIST (embedded)")]  # ImageNet curves stay off Fashion-MNIST axes
    assert [(s.label, s.role) for s in as_imagenet.series] == [(MOCO, "ours"), (RANDOM, "baseline")]
    labels = [s.label for s in by[("fmnist_knn", "Fashion-MNIST (embedded)")].series]
    assert labels[0] == MOCO and sorted(labels[1:]) == sorted([PIXELS, RANDOM])  # baselines after ours, by label


def _drawn(fig):
    """Each series' (label, x, y, colour, marker, error bar heights) as matplotlib drew it."""
    mpl = draw(fig)
    mpl.canvas.draw()
    out = []
    for c in mpl.axes[0].containers:  # one ErrorbarContainer per series: (data line, caps, bars)
        line, _, (bars,) = c.lines
        heights = tuple(round(seg[1][1] - seg[0][1], 6) for seg in bars.get_segments())
        out.append((c.get_label(), tuple(line.get_xdata()), tuple(line.get_ydata()),
                    matplotlib.colors.to_hex(line.get_color()), line.get_marker(), heights))
    return mpl, out


def test_plot_draws_every_series_visibly_in_its_own_style_with_error_bars(demo):
    tables = _tables(demo)
    bounds = {(f, m): (v - 1.0, v + 2.0) for t in tables.values()
              for f, m, v in t.loc[t["row"] == "ours", ["file", "metric", "value"]].itertuples(index=False)}
    fig = next(f for f in figures(tables, bounds) if f.table == "fmnist_knn")
    mpl, lines = _drawn(fig)
    assert [ln[0] for ln in lines] == [s.label for s in fig.series]
    styles = {ln[0]: ln[3:5] for ln in lines}
    assert len(set(styles.values())) == len(styles)  # colour and marker of each series its own
    assert styles[RANDOM] == (BASELINES["random:"]["color"], BASELINES["random:"]["marker"])
    assert styles[PIXELS] == (BASELINES["pixels:"]["color"], BASELINES["pixels:"]["marker"])
    assert len({ln[1] for ln in lines}) == len(lines)  # shifted apart: no series hidden under another
    assert all(ln[5] == (3.0,) * len(ln[1]) for ln in lines)  # error bars from value - 1 to value + 2
    legend = mpl.legends[0].get_window_extent()
    assert not legend.overlaps(mpl.axes[0].get_window_extent())


def test_latex_tables_for_a_paper(demo):
    tex = (demo["report"] / "tables" / "imagenet_linear.tex").read_text()
    assert all(rule in tex for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    assert r"67.5{\tiny$\pm$0.1}" in tex and "+0.05" in tex
    lowshot = next((demo["report"] / "tables").glob("minivoc_lowshot_svm*.tex")).read_text()
    assert r"mAP@k1" in lowshot
    for text in (lowshot, (demo["report"] / "tables" / "summary.tex").read_text()):  # checkpoint labels in names
        assert r"\_" in text and "_" not in text.replace(r"\_", "")
    summary = (demo["report"] / "tables" / "summary_vs_published.tex").read_text()
    assert r"67.5{\tiny$\pm$0.1}" in summary
    for name in ("summary_vs_published", "not_finished", "not_results", "imagenet_knn"):
        assert len(pd.read_csv(demo["report"] / "tables" / f"{name}.csv")) > 0


def test_published_datasets_are_the_protocol_files_datasets():
    from moco_bench.evaluators.catalog import load_evaluation

    for benchmark, dataset in PUBLISHED_DATASETS.items():
        cfg = load_evaluation(ROOT / "evaluate" / f"{benchmark}.yaml")
        named = cfg.data.name if cfg.get("data") is not None else "+".join(cfg.datasets.train)
        assert named == dataset, benchmark


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_CHECK = """<script>window.addEventListener('load', () => {
  const root = document.documentElement, box = document.querySelector('.pivot-box');
  const out = document.createElement('pre'); out.id = 'render-check';
  out.textContent = JSON.stringify({
    images: Array.from(document.images).map(i => ({natural: i.naturalWidth, shown: i.getBoundingClientRect().width,
                                                    textPx: parseFloat(i.dataset.textPx)})),
    keys: Array.from(document.querySelectorAll('#pivot thead th.key')).map(th => ({
      text: th.firstChild.textContent.trim(), left: th.getBoundingClientRect().left,
      right: th.getBoundingClientRect().right})),
    box: {left: box.getBoundingClientRect().left, right: box.getBoundingClientRect().right,
          scrolls: box.scrollWidth > box.clientWidth},
    scrollWidth: root.scrollWidth, clientWidth: root.clientWidth});
  document.body.appendChild(out);
});</script>"""


def _chromium(tmp_path, width, *args):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},2000"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/setup.sh installs it "
                                             "where apt-get is usable)")
@pytest.mark.parametrize("width", [1280, 800])
def test_chromium_renders_the_summary_and_readable_plots_without_page_scroll(demo, tmp_path, width):
    """At 1280 and 800 px: no horizontal page scroll (a wide table scrolls in its own box), the summary's key
    columns (metric and one per checkpoint) in view, every plot loaded and its smallest text 11 px or more."""
    page = tmp_path / "report.html"
    page.write_text(demo["html"].replace("</body>", _CHECK + "</body>"))
    dom = _chromium(tmp_path, width, "--dump-dom", page.as_uri())
    found = re.search(r'<pre id="render-check">(.*?)</pre>', dom)
    assert found, dom[-2000:]
    check = json.loads(unescape(found.group(1)))
    assert check["scrollWidth"] <= check["clientWidth"] and check["clientWidth"] >= width - 30  # less a scroll bar
    assert [k["text"] for k in check["keys"]] == ["metric", MOCO, V2, RANDOM, PIXELS]
    assert all(check["box"]["left"] <= k["left"] and k["right"] <= check["box"]["right"] for k in check["keys"])
    assert check["box"]["scrolls"] == (width == 800)  # the differences and published columns scroll in the box
    images = check["images"]
    assert len(images) == len(figures(_tables(demo))) and all(i["natural"] > 0 for i in images)
    assert min(i["textPx"] * i["shown"] / i["natural"] for i in images) >= 11
    shot = tmp_path / "report.png"
    _chromium(tmp_path, width, f"--screenshot={shot}", (demo["report"] / "report.html").as_uri())
    assert shot.read_bytes()[16:24] == width.to_bytes(4, "big") + (2000).to_bytes(4, "big")  # PNG width, height
