"""The report's summary, pivoted: one row per (benchmark, dataset, layer, metric), one column per checkpoint (named by
its label), each value with its interval; the published reference beside it; the difference of every other
checkpoint to a baseline column (``--baseline``, by default the ``random:`` one) with its paired interval; the best
value of each row marked; and a verdict per benchmark written from those numbers.

Every metric of the summary is higher-is-better (top-1, mAP, AP, mIoU), which "best" and "above" rely on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import pandas as pd

from moco_bench.core.errors import ConfigError
from moco_bench.results.stats import Interval
from moco_bench.results.store import is_baseline
from moco_bench.results.tables import NOT_HEADLINE, natural
from moco_bench.results.uncertainty import Uncertainty

SHOWN_LAYERS = ("", "gap", "finetuned")  # layers a metric's name does not need to repeat


@dataclass
class Cell:
    value: float
    interval: Optional[Interval] = None
    best: bool = False


@dataclass
class Row:
    metric: str  # as shown: the metric, with its layer where that is not the network's output
    key: Tuple[str, str, str, str]  # (table, dataset, layer, metric)
    cells: Dict[str, Cell]
    diffs: Dict[str, Cell]  # column -> its difference to the baseline column
    published: str = ""  # "67.5 ± 0.1", or several such, "; "-joined
    published_rows: str = ""  # which published rows, for a tooltip
    vs_published: List[Tuple[str, float, str, float]] = field(default_factory=list)  # (column, delta, within, spread)


@dataclass
class Group:
    table: str
    dataset: str
    comparable: bool
    note: str  # the records' comparability note (the first, where they differ)
    rows: List[Row]
    verdict: List[str] = field(default_factory=list)


@dataclass
class Pivot:
    columns: List[str]  # checkpoint labels: trained checkpoints first, then baselines
    paths: Dict[str, str]  # label -> checkpoint path
    baseline: Optional[str]
    groups: List[Group]
    method: str  # how the intervals were computed

    @property
    def diff_columns(self) -> List[str]:
        return [c for c in self.columns if c != self.baseline] if self.baseline else []

    def diff_name(self, column: str) -> str:
        return f"{column} - {self.baseline}"


def _columns(rows: pd.DataFrame) -> Tuple[List[str], Dict[str, str]]:
    paths = dict(zip(rows["method"], rows["checkpoint"]))
    rank = {"random:": 1, "pixels:": 2}
    order = sorted(paths, key=lambda c: (is_baseline(paths[c]), rank.get(str(paths[c])[:7], 3), natural(
        pd.Series([c])).iloc[0]))
    return order, paths


def choose_baseline(columns: List[str], paths: Dict[str, str], baseline: Optional[str]) -> Optional[str]:
    """``baseline`` (a column's label), else the first ``random:`` checkpoint, else none."""
    if baseline is not None:
        if baseline not in columns:
            raise ConfigError(f"--baseline {baseline!r}: no checkpoint of this report has that label (they are: "
                              f"{', '.join(repr(c) for c in columns)})")
        return baseline
    return next((c for c in columns if str(paths[c]).startswith("random:")), None)


def _shown(metric: str, layer: str) -> str:
    return metric if layer in SHOWN_LAYERS or layer in metric else f"{metric} ({layer})"


def _published(g: pd.DataFrame) -> Tuple[str, str]:
    refs = g[g["reference"] != ""].drop_duplicates("reference")
    values = [f"{r['reference_value']:g}" + ("" if pd.isna(r["spread"]) else f" ± {r['spread']:g}")
              for _, r in refs.iterrows()]
    return "; ".join(values), "; ".join(refs["reference"])


def _row(key, g: pd.DataFrame, pivot: Pivot, unc: Uncertainty) -> Row:
    by = {r["method"]: r for _, r in g.iterrows()}
    cells = {c: Cell(float(r["value"]), unc.single(r["file"], r["metric"])) for c, r in by.items()}
    best = max(c.value for c in cells.values())
    for c in cells.values():
        c.best = len(cells) > 1 and c.value == best
    diffs = {}
    base = by.get(pivot.baseline)
    for c in pivot.diff_columns:
        if c in by and base is not None:
            diffs[c] = Cell(cells[c].value - cells[pivot.baseline].value, unc.paired(by[c]["file"], base["file"],
                                                                                      key[3]))
    published, rows = _published(g)
    vs = [(c, float(r["delta"]), r["within_spread"], float(r["spread"])) for c, r in by.items() if pd.notna(r["delta"])]
    return Row(_shown(key[3], key[2]), key, cells, diffs, published, rows, vs)


def build_pivot(tables: Dict[str, pd.DataFrame], unc: Uncertainty, baseline: Optional[str] = None) -> Pivot:
    """The pivot of :func:`moco_bench.results.tables.compile_tables`' tables (our rows, headline metrics)."""
    parts = [t[t["row"] == "ours"].assign(table=name) for name, t in tables.items()]
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if not rows.empty:
        rows = rows[~rows["metric"].str.contains(NOT_HEADLINE, regex=True)]
    if rows.empty:
        return Pivot([], {}, None, [], unc.settings.text())
    columns, paths = _columns(rows)
    pivot = Pivot(columns, paths, choose_baseline(columns, paths, baseline), [], unc.settings.text())
    rows = rows.assign(_m=natural(rows["metric"])).sort_values(["table", "dataset", "layer", "_m"], kind="stable")
    for (table, dataset), g in rows.groupby(["table", "dataset"], sort=False):
        group = Group(table, dataset, bool(g["comparable"].all()), str(g["comparability"].iloc[0]), [])
        for (layer, metric), r in g.groupby(["layer", "metric"], sort=False):
            group.rows.append(_row((table, dataset, layer, metric), r, pivot, unc))
        group.verdict = verdict(group, pivot)
        pivot.groups.append(group)
    return pivot


def _gap(row: Row, diff: Cell) -> str:
    return f"{row.metric} {diff.value:+.2f}" + (f" {diff.interval.bracket(signed=True)}" if diff.interval else "")


def _against_baseline(group: Group, pivot: Pivot, column: str) -> Optional[str]:
    """``ckpt vs random init: above on 3 of 4 metrics (2 beyond the interval); below: top1@k200 -1.90 [...]``."""
    diffs = [(r, r.diffs[column]) for r in group.rows if column in r.diffs]
    if not diffs:
        return None
    above = [(r, d) for r, d in diffs if d.value > 0]
    below = [(r, d) for r, d in diffs if d.value < 0]
    sure = [d.interval for _, d in diffs if d.interval is not None]
    text = f"{column} vs {pivot.baseline}: above on {len(above)} of {len(diffs)} metric{'s' * (len(diffs) > 1)}"
    if len(diffs) - len(above) - len(below):
        text += f", equal on {len(diffs) - len(above) - len(below)}"
    if sure:
        pct = f"{100 * sure[0].confidence:g}%"
        up, down = sum(i.low > 0 for i in sure), sum(i.high < 0 for i in sure)
        text += f" ({up} with the {pct} interval above 0, {down} below, {len(sure) - up - down} spanning it)"
    if below:
        text += "; below on " + ", ".join(_gap(r, d) for r, d in below[:4]) + (" ..." if len(below) > 4 else "")
    elif above:
        r, d = max(above, key=lambda x: x[1].value)
        text += f"; largest gap {_gap(r, d)}"
    return text


def _against_published(group: Group) -> List[str]:
    out = []
    held: Dict[str, List] = {}
    for r in group.rows:
        for column, delta, within, spread in r.vs_published:
            held.setdefault(column, []).append((r, delta, within, spread))
    for column, items in held.items():
        spread = [x for x in items if x[2]]
        inside = sum(x[2] == "within" for x in spread)
        text = f"{column} vs published: " + ", ".join(f"{r.metric} {d:+.2f}" for r, d, _, _ in items)
        if spread:
            text += f"; within the published spread on {inside} of {len(spread)}"
        out.append(text)
    return out


def verdict(group: Group, pivot: Pivot) -> List[str]:
    """The benchmark's findings in words, each computed from the group's numbers."""
    lines = [t for c in pivot.diff_columns if (t := _against_baseline(group, pivot, c))]
    lines += _against_published(group)
    if not lines:
        lines.append("no baseline column and no comparable published row to hold these numbers against")
    return lines


def records(pivot: Pivot) -> pd.DataFrame:
    """The pivot as numbers, one line per (row, checkpoint): value, interval, best, difference to the baseline."""
    out = []
    for g in pivot.groups:
        for r in g.rows:
            for c, cell in r.cells.items():
                iv, d = cell.interval, r.diffs.get(c)
                out.append({"table": g.table, "dataset": g.dataset, "layer": r.key[2], "metric": r.key[3],
                            "checkpoint": c, "value": cell.value, "low": iv.low if iv else None,
                            "high": iv.high if iv else None, "interval": iv.method if iv else "",
                            "n": iv.n if iv else None, "best": cell.best, "baseline": pivot.baseline or "",
                            "vs_baseline": d.value if d else None,
                            "vs_baseline_low": d.interval.low if d and d.interval else None,
                            "vs_baseline_high": d.interval.high if d and d.interval else None,
                            "published": r.published})
    return pd.DataFrame(out)


def cell_text(cell: Optional[Cell], signed: bool = False, bold=lambda t: t) -> str:
    """``65.67 [60.67, 71.33]`` (a dagger after an interval over trials; ``bold`` marks the best of a row)."""
    if cell is None:
        return ""
    value = f"{cell.value:{'+' if signed else ''}.2f}"
    iv = cell.interval
    ci = f" {iv.bracket(signed=signed)}" + (" †" if iv.method == "t" else "") if iv else ""
    return (bold(value) if cell.best else value) + ci
