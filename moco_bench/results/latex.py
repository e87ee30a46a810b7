"""LaTeX tables to paste into a paper: booktabs rules, values with their spread as ``67.5{\\tiny$\\pm$0.1}``.

Each file is a bare ``tabular`` (the paper wraps it in its own ``table`` with its caption); it needs
``\\usepackage{booktabs}``. Text cells are escaped by pandas' Styler; value cells are written here.
"""

from __future__ import annotations

import math
import re
from typing import Optional, Sequence

import pandas as pd

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_SPREAD_OF = re.compile(r"_std$")
_FOLDED = r"_(?:std|min|max)$"  # spreads over seeds: folded into the value's +- or left to the CSV


def escape(text: str) -> str:
    """A column name as LaTeX text (cells are escaped by the Styler)."""
    return "".join(_SPECIAL.get(ch, ch) for ch in str(text))


def plus_minus(value: float, spread: Optional[float] = None, digits: Optional[int] = None) -> str:
    """``67.5{\\tiny$\\pm$0.1}``, or the bare value where no spread is known. ``digits=None`` keeps a published
    figure as printed (``%g``); ours are given with ``digits`` decimals."""
    text = f"{value:g}" if digits is None else f"{value:.{digits}f}"
    if spread is None or (isinstance(spread, float) and math.isnan(spread)):
        return text
    spread_text = f"{spread:g}" if digits is None else f"{spread:.{digits}f}"
    return text + r"{\tiny$\pm$" + spread_text + "}"


def tabular(df: pd.DataFrame, latex_columns: Sequence[str] = ()) -> str:
    """``df`` as a booktabs tabular; columns in ``latex_columns`` hold LaTeX already (cells and name), the others
    are escaped."""
    text = [c for c in df.columns if c not in latex_columns]
    align = "".join("r" if c in latex_columns else "l" for c in df.columns)
    styler = df.style.hide(axis="index").format(escape="latex", subset=text, na_rep="")
    styler = styler.format_index(lambda name: name if name in latex_columns else escape(name), axis=1)
    return styler.to_latex(hrules=True, column_format=align)


def benchmark_table(table: pd.DataFrame, deltas: bool = True) -> str:
    """A compiled benchmark table (tables.compile_tables) for a paper: our rows, each value with its spread over
    seeds where the record has one (``<metric>_std``), then the published rows with their published spread."""
    ours = table[table["row"] == "ours"]
    std = {(r["method"], r["layer"], _SPREAD_OF.sub("", r["metric"])): r["value"]
           for _, r in ours[ours["metric"].str.contains(_SPREAD_OF)].iterrows()}
    ours = ours[~ours["metric"].str.contains(_FOLDED, regex=True)]
    rows = []
    for _, r in ours.iterrows():
        row = {"Model": r["method"], "Dataset": r["dataset"], "Layer": r["layer"], "Metric": r["metric"],
               "Value": plus_minus(r["value"], std.get((r["method"], r["layer"], r["metric"])), digits=2)}
        if deltas:
            row[r"$\Delta$"] = "" if pd.isna(r["delta"]) else f"{r['delta']:+.2f}"
        rows.append(row)
    for _, r in table[table["row"] == "published"].iterrows():
        row = {"Model": f"{r['method']} {r['epochs']}ep {r['arch']} ({r['source']})", "Dataset": r["dataset"],
               "Layer": r["layer"], "Metric": r["metric"], "Value": plus_minus(r["value"], r["spread"])}
        if deltas:
            row[r"$\Delta$"] = ""
        rows.append(row)
    return tabular(pd.DataFrame(rows), latex_columns=("Value", r"$\Delta$"))


def summary_table(rows: pd.DataFrame) -> str:
    """The report's summary (tables.summary_rows): one line per (benchmark, metric, checkpoint) with the reference
    value and its spread, and the delta where the result is comparable."""
    out = pd.DataFrame({
        "Benchmark": rows["table"], "Model": rows["checkpoint"], "Dataset": rows["dataset"], "Metric": rows["metric"],
        "Value": [plus_minus(v, digits=2) for v in rows["value"]],
        "Published": ["" if pd.isna(v) else plus_minus(v, s) for v, s in zip(rows["reference_value"], rows["spread"])],
        r"$\Delta$": ["" if pd.isna(d) else f"{d:+.2f}" for d in rows["delta"]],
    })
    return tabular(out, latex_columns=("Value", "Published", r"$\Delta$"))



def _pivot_cell(cell, signed: bool = False) -> str:
    if cell is None:
        return ""
    value = f"{cell.value:{'+' if signed else ''}.2f}"
    value = r"\textbf{" + value + "}" if cell.best else value
    iv = cell.interval
    if iv is None:
        return value
    return value + r"{\scriptsize\," + iv.bracket(signed=signed) + (r"$^\dagger$" if iv.method == "t" else "") + "}"


def pivot_table(pivot) -> str:
    """The report's pivoted summary (pivot.build_pivot) as one booktabs tabular: a row per benchmark metric, a column
    per checkpoint (best of each row in bold), the differences to the baseline, the published value; each value with
    its interval, how they were computed in a comment above."""
    heads = ["Metric", *map(escape, pivot.columns), *[r"$\Delta$ " + escape(c) for c in pivot.diff_columns],
             "Published"]
    lines = [f"% {pivot.method}", f"% Delta: the difference to {escape(pivot.baseline)} (--baseline)" if pivot.baseline
             else "% no baseline column", r"\begin{tabular}{l" + "r" * (len(heads) - 1) + "}", r"\toprule",
             " & ".join(heads) + r" \\", r"\midrule"]
    for i, g in enumerate(pivot.groups):
        if i:
            lines.append(r"\midrule")
        title = f"{g.table} — {g.dataset or 'unnamed dataset'}" + ("" if g.comparable else " (not comparable)")
        lines.append(rf"\multicolumn{{{len(heads)}}}{{l}}{{\textit{{{escape(title).replace('—', '---')}}}}} \\")
        for r in g.rows:
            cells = [escape(r.metric), *[_pivot_cell(r.cells.get(c)) for c in pivot.columns],
                     *[_pivot_cell(r.diffs.get(c), signed=True) for c in pivot.diff_columns],
                     escape(r.published).replace("±", r"$\pm$")]
            lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)
