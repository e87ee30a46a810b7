"""Plots of the compiled tables: low-shot mAP vs k, kNN top-1 vs k, linear top-1 per layer.

A figure holds one table's rows on one dataset: our checkpoints against each other (named by their labels; the
baselines ``random:`` and ``pixels:`` each in a colour and marker of their own), and the published curves only
where they were measured on that same dataset. A Fashion-MNIST curve beside published ImageNet ones would say
nothing true, so :func:`figures` never builds such a figure and :func:`draw` draws exactly the series it is given.
Each point carries its interval as an error bar (moco_bench/results/stats.py); series are shifted apart a little
along x, so identical curves (a checkpoint equal to its baseline) stay visible side by side.

Text is drawn at 9.5 pt or more on a figure rendered at 192 dpi and shown at half its pixel size (page.py), so it
reads at 12 px or more on the page. Names are never parsed as mathtext (``$\\notacommand$`` is shown as typed).
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.text  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# (kind, metric pattern with the x value as group 1, what it shows, x label, y label, log2 x axis)
KINDS = (
    ("lowshot", r"mAP@k(\d+)", "low-shot SVM mAP vs positives per class", "positives per class k", "mAP", True),
    ("knn", r"top1@k(\d+)", "kNN top-1 vs neighbours", "neighbours k", "top-1 (%)", True),
    ("layers", r"feature(\d)_top1", "linear top-1 per layer", "layer (featureN)", "top-1 (%)", False),
)
STYLE = {  # one look for every figure of a report
    "font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "legend.fontsize": 9.5, "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
    "axes.spines.right": False, "lines.linewidth": 1.6, "lines.markersize": 5.5, "savefig.dpi": 192,
    "text.parse_math": False,
}
OURS = (("#1b9e77", "o"), ("#1f78b4", "s"), ("#e7298a", "^"), ("#66a61e", "P"), ("#a6761d", "X"),
        ("#e6ab02", "*"), ("#17becf", "h"), ("#8c564b", "<"))  # no colour of a baseline's among them
BASELINES = {"random:": dict(color="#d95f02", marker="v", ls="-.", mfc="white"),
             "pixels:": dict(color="#7570b3", marker="D", ls=":", mfc="white")}
OTHER_BASELINE = dict(color="#444444", marker="x", ls=":")
PUBLISHED = (("0.35", "o"), ("0.55", "d"), ("0.25", "p"), ("0.65", ">"))
_SCHEME = re.compile(r"^[a-z]+:")  # random:resnet50, pixels: ... : not a trained checkpoint file
Bounds = Dict[Tuple[str, str], Tuple[float, float]]  # (record file, metric) -> interval


@dataclass(frozen=True)
class Series:
    label: str
    role: str  # ours, baseline or published
    dataset: str
    x: Tuple[float, ...]
    y: Tuple[float, ...]
    low: Tuple[float, ...] = ()  # the interval of each point (NaN where none)
    high: Tuple[float, ...] = ()
    scheme: str = ""  # a baseline's checkpoint scheme (random:, pixels:)


@dataclass(frozen=True)
class Figure:
    key: str  # file stem
    table: str
    dataset: str
    kind: str
    caption: str
    series: Tuple[Series, ...]


def _points(rows: pd.DataFrame, pattern: str) -> pd.DataFrame:
    x = pd.to_numeric(rows["metric"].str.extract(f"^{pattern}$")[0], errors="coerce")
    return rows.assign(x=x).dropna(subset=["x"]).sort_values("x")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "unnamed"


def _our_series(rows: pd.DataFrame, dataset: str, by_layer: bool, bounds: Bounds) -> List[Series]:
    """One series per checkpoint and protocol (and layer, unless the layer is the x axis); protocol and layer
    named in the label only where they vary."""
    keys = ["method", "protocol"] + (["layer"] if by_layer else [])
    several = [k for k in keys[1:] if rows[k].nunique() > 1]
    out = []
    for values, g in rows.groupby(keys, sort=False):
        named = dict(zip(keys, values))
        label = " ".join([named["method"]] + [f"({named[k]})" for k in several])
        scheme = m.group(0) if (m := _SCHEME.match(str(g["checkpoint"].iloc[0]))) else ""
        ci = [bounds.get((f, m), (math.nan, math.nan)) for f, m in zip(g["file"], g["metric"])]
        out.append(Series(label, "baseline" if scheme else "ours", dataset, tuple(g["x"]), tuple(g["value"]),
                          tuple(c[0] for c in ci), tuple(c[1] for c in ci), scheme))
    return sorted(out, key=lambda s: s.role == "baseline")


def _published_series(rows: pd.DataFrame, dataset: str) -> List[Series]:
    out = []
    for (method, epochs, arch, protocol, source), g in rows.groupby(
            ["method", "epochs", "arch", "protocol", "source"], sort=False):
        out.append(Series(f"{method} {epochs}ep {arch}, {protocol} ({source})", "published", dataset,
                          tuple(g["x"]), tuple(g["value"])))
    return out


def figures(tables: Dict[str, pd.DataFrame], bounds: Optional[Bounds] = None) -> List[Figure]:
    """Every figure the tables support: one per (table, dataset of ours, kind) where some series of ours has two
    points or more. Published rows join only when their dataset is the figure's. ``bounds``: the interval of each
    (record file, metric) that has one, drawn as error bars."""
    out, bounds = [], bounds or {}
    for name, table in tables.items():
        mine = table[table["row"] == "ours"]
        for dataset, rows in mine.groupby("dataset", sort=False):
            for kind, pattern, what, *_ in KINDS:
                ours = _our_series(_points(rows, pattern), dataset, kind != "layers", bounds)
                if not any(len(s.x) > 1 for s in ours):
                    continue
                pub = table[(table["row"] == "published") & (table["dataset"] == dataset)
                            & table["layer"].isin(rows["layer"])] if dataset else table.iloc[0:0]
                published = _published_series(_points(pub, pattern), dataset)
                protocols = ", ".join(sorted(set(rows["protocol"])))
                caption = f"{what} on {dataset or 'an unnamed dataset'}; protocol {protocols}"
                caption += (f"; published: {', '.join(sorted(set(pub['protocol'])))} on the same dataset" if published
                            else "; no published curve on this dataset")
                if any(s.low and not all(math.isnan(v) for v in s.low) for s in ours):
                    caption += "; error bars: the summary's intervals; series shifted apart a little along x"
                out.append(Figure(f"{_slug(name)}__{_slug(dataset)}__{kind}", name, dataset, kind, caption,
                                  tuple(ours + published)))
    return out


def _styles(series: Tuple[Series, ...]) -> List[dict]:
    """Each series' colour, marker and line: ours from OURS in turn, each baseline scheme its own, published grey."""
    ours, published, out = iter(OURS * 4), iter(PUBLISHED * 8), []
    for s in series:
        if s.role == "ours":
            color, marker = next(ours)
            out.append(dict(color=color, marker=marker, ls="-"))
        elif s.role == "baseline":
            out.append(dict(BASELINES.get(s.scheme, OTHER_BASELINE)))
        else:
            color, marker = next(published)
            out.append(dict(color=color, marker=marker, ls="--", mfc="none", alpha=0.9))
    return out


def dodged(series: Tuple[Series, ...], logx: bool) -> List[np.ndarray]:
    """Each series' x shifted by its own small offset (a fraction of an octave on a log axis), symmetric around
    the true x, so that equal series are drawn side by side rather than on top of each other."""
    n = len(series)
    step = min(0.08, 0.5 / max(n, 1)) if logx else min(0.1, 0.6 / max(n, 1))
    out = []
    for i, s in enumerate(series):
        d = (i - (n - 1) / 2) * step
        x = np.asarray(s.x, dtype=float)
        out.append(x * 2.0 ** d if logx else x + d)
    return out


def draw(figure: Figure) -> plt.Figure:
    """The matplotlib figure: one line per series with its error bars, legend below the axes."""
    _, _, _, xlabel, ylabel, logx = next(k for k in KINDS if k[0] == figure.kind)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.2, 3.0 + 0.2 * len(figure.series)), layout="constrained")
        for s, x, style in zip(figure.series, dodged(figure.series, logx), _styles(figure.series)):
            y = np.asarray(s.y, dtype=float)
            low, high = (np.asarray(s.low, float), np.asarray(s.high, float)) if s.low else (y, y)
            yerr = np.vstack([np.clip(y - low, 0, None), np.clip(high - y, 0, None)])
            ax.errorbar(x, y, yerr=np.nan_to_num(yerr), label=s.label, capsize=2.5, elinewidth=1, **style)
        if logx:
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        xs = sorted({x for s in figure.series for x in s.x})
        if len(xs) <= 12:  # ticks at the measured k or layers, not at fractions between them
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(textwrap.fill(f"{figure.table} — {figure.dataset}", 60))
        fig.legend(loc="outside lower center", ncols=1, frameon=False)
    return fig


def text_points(fig: plt.Figure) -> float:
    """The smallest font size (points) of any text the figure shows."""
    return min(t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text())


def render(figure: Figure) -> Tuple[bytes, bytes, float]:
    """The figure as PNG (for the page) and PDF (for a paper), and its smallest text in PNG pixels."""
    fig = draw(figure)
    out = []
    with plt.rc_context(STYLE):
        for fmt in ("png", "pdf"):
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, bbox_inches="tight", pad_inches=0.08)
            out.append(buf.getvalue())
    px = text_points(fig) * STYLE["savefig.dpi"] / 72.0
    plt.close(fig)
    return out[0], out[1], px
