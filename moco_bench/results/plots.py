"""Plots against the published numbers: low-shot mAP vs k, kNN top-1 vs k, linear top-1 per layer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

# (file stem, benchmarks, metric pattern with the x value as group 1, x label, y label, log x)
PLOTS = (
    ("lowshot_map_vs_k", ("voc07_lowshot_svm",), r"mAP@k(\d+)", "positives per class k", "mAP", True),
    ("knn_top1_vs_k", ("imagenet_knn",), r"top1@k(\d+)", "neighbours k", "top-1 (%)", True),
    ("linear_top1_per_layer", ("imagenet_mhead_linear", "places205_mhead_linear"), r"feature(\d)_top1",
     "layer (featureN)", "top-1 (%)", False),
)


def _series(df: pd.DataFrame, pattern: str) -> pd.DataFrame:
    x = df["metric"].str.extract(f"^{pattern}$")[0]
    out = df.assign(x=pd.to_numeric(x, errors="coerce")).dropna(subset=["x"])
    return out.sort_values("x")


def plot_tables(tables: dict, out_dir: Path) -> List[Path]:
    """One PNG per plot kind that has rows of ours; published curves drawn dashed beside them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, benchmarks, pattern, xlabel, ylabel, logx in PLOTS:
        names = [n for n in tables if re.sub(r" \[.*\]$", "", n) in benchmarks]
        if not names:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for name in names:
            t = tables[name]
            keys = ["row", "method", "epochs", "protocol", "source"]
            for (row, method, epochs, protocol, source), g in t.groupby(keys, sort=False):
                s = _series(g, pattern)
                if s.empty:
                    continue
                label = (f"{method} {epochs}ep, {protocol} ({source})" if row == "published"
                         else f"ours: {method} ({protocol})")
                style = dict(ls="--", marker="o", ms=3, alpha=0.7) if row == "published" else dict(lw=2, marker="s")
                ax.plot(s["x"], s["value"], label=label, **style)
        if logx:
            ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(", ".join(names))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
        fig.tight_layout()
        path = out_dir / f"{stem}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
