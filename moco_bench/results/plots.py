"""Plots of the compiled tables: low-shot mAP vs k, kNN top-1 vs k, linear top-1 per layer.

A figure holds one table's rows on one dataset: our checkpoints against each other (baselines such as
``random:`` or ``pixels:`` checkpoints drawn as one more series, dotted), and the published curves only where
they were measured on that same dataset. A Fashion-MNIST curve beside published ImageNet ones would say nothing
true, so :func:`figures` never builds such a figure and :func:`draw` draws exactly the series it is given.
"""

from __future__ import annotations

import io
import re
import textwrap
from dataclasses import dataclass
from typing import Dict, List, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

# (kind, metric pattern with the x value as group 1, what it shows, x label, y label, log2 x axis)
KINDS = (
    ("lowshot", r"mAP@k(\d+)", "low-shot SVM mAP vs positives per class", "positives per class k", "mAP", True),
    ("knn", r"top1@k(\d+)", "kNN top-1 vs neighbours", "neighbours k", "top-1 (%)", True),
    ("layers", r"feature(\d)_top1", "linear top-1 per layer", "layer (featureN)", "top-1 (%)", False),
)
STYLE = {  # one look for every figure of a report
    "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
    "axes.spines.right": False, "lines.linewidth": 1.6, "lines.markersize": 4, "savefig.dpi": 150,
}
_ROLE_STYLE = {
    "ours": dict(ls="-", marker="s"),
    "baseline": dict(ls=":", marker="^", color="0.35"),
    "published": dict(ls="--", marker="o", alpha=0.75, ms=3),
}
_SCHEME = re.compile(r"^[a-z]+:")  # random:resnet50, pixels: ... : not a trained checkpoint file


@dataclass(frozen=True)
class Series:
    label: str
    role: str  # ours, baseline or published
    dataset: str
    x: Tuple[float, ...]
    y: Tuple[float, ...]


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


def _our_series(rows: pd.DataFrame, dataset: str, by_layer: bool) -> List[Series]:
    """One series per checkpoint and protocol (and layer, unless the layer is the x axis); protocol and layer
    named in the label only where they vary."""
    keys = ["method", "protocol"] + (["layer"] if by_layer else [])
    several = [k for k in keys[1:] if rows[k].nunique() > 1]
    out = []
    for values, g in rows.groupby(keys, sort=False):
        named = dict(zip(keys, values))
        label = " ".join([named["method"]] + [f"({named[k]})" for k in several])
        role = "baseline" if _SCHEME.match(str(g["checkpoint"].iloc[0])) else "ours"
        out.append(Series(label, role, dataset, tuple(g["x"]), tuple(g["value"])))
    return sorted(out, key=lambda s: s.role == "baseline")


def _published_series(rows: pd.DataFrame, dataset: str) -> List[Series]:
    out = []
    for (method, epochs, arch, protocol, source), g in rows.groupby(
            ["method", "epochs", "arch", "protocol", "source"], sort=False):
        out.append(Series(f"{method} {epochs}ep {arch}, {protocol} ({source})", "published", dataset,
                          tuple(g["x"]), tuple(g["value"])))
    return out


def figures(tables: Dict[str, pd.DataFrame]) -> List[Figure]:
    """Every figure the tables support: one per (table, dataset of ours, kind) where some series of ours has two
    points or more. Published rows join only when their dataset is the figure's."""
    out = []
    for name, table in tables.items():
        mine = table[table["row"] == "ours"]
        for dataset, rows in mine.groupby("dataset", sort=False):
            for kind, pattern, what, *_ in KINDS:
                ours = _our_series(_points(rows, pattern), dataset, by_layer=kind != "layers")
                if not any(len(s.x) > 1 for s in ours):
                    continue
                pub = table[(table["row"] == "published") & (table["dataset"] == dataset)
                            & table["layer"].isin(rows["layer"])] if dataset else table.iloc[0:0]
                published = _published_series(_points(pub, pattern), dataset)
                protocols = ", ".join(sorted(set(rows["protocol"])))
                caption = f"{what} on {dataset or 'an unnamed dataset'}; protocol {protocols}"
                caption += (f"; published: {', '.join(sorted(set(pub['protocol'])))} on the same dataset" if published
                            else "; no published curve on this dataset")
                out.append(Figure(f"{_slug(name)}__{_slug(dataset)}__{kind}", name, dataset, kind, caption,
                                  tuple(ours + published)))
    return out


def draw(figure: Figure) -> plt.Figure:
    """The matplotlib figure: our series solid, baselines dotted grey, published dashed; legend below the axes."""
    _, _, _, xlabel, ylabel, logx = next(k for k in KINDS if k[0] == figure.kind)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.2, 3.0 + 0.17 * len(figure.series)), layout="constrained")
        for s in figure.series:
            ax.plot(s.x, s.y, label=s.label, **_ROLE_STYLE[s.role])
        if logx:
            ax.set_xscale("log", base=2)
        xs = sorted({x for s in figure.series for x in s.x})
        if len(xs) <= 12:  # ticks at the measured k or layers, not at fractions between them
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(textwrap.fill(f"{figure.table} — {figure.dataset}", 70))
        fig.legend(loc="outside lower center", ncols=1, frameon=False)
    return fig


def render(figure: Figure, fmt: str = "png") -> bytes:
    """The figure as file bytes (``png`` for the page, ``pdf`` for a paper)."""
    fig = draw(figure)
    buf = io.BytesIO()
    with plt.rc_context(STYLE):
        fig.savefig(buf, format=fmt, bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)
    return buf.getvalue()
