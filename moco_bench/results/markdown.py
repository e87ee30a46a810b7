"""The Markdown report's text: cells escaped so that a name or a value from a record is shown as text, never as HTML
(``<img onerror=...>``), a link or a broken table; and the pivoted summary as one table per benchmark."""

from __future__ import annotations

import re
from typing import List

import pandas as pd

from moco_bench.results.pivot import Pivot, cell_text

_SPECIAL = re.compile(r"([\\`*\[\]|])")  # not "_": GitHub's Markdown keeps it literal inside a word, as names use it
_HTML = {"&": "&amp;", "<": "&lt;"}  # no tag or entity without these; ">" stays readable in "data.name A -> B"


def text(value) -> str:
    """``value`` as Markdown that shows exactly its characters (one line)."""
    s = " ".join(str(value).split()) if value is not None else ""
    s = "".join(_HTML.get(ch, ch) for ch in s)
    return _SPECIAL.sub(r"\\\1", s)


def table(df: pd.DataFrame) -> str:
    """``df`` as a pipe table, every header and cell escaped (cells already given as text)."""
    shown = df.astype(object).where(df.notna(), "").map(text)
    shown.columns = [text(c) for c in df.columns]
    return shown.to_markdown(index=False, disable_numparse=True)


def pivot_lines(pivot: Pivot) -> List[str]:
    """The summary: per benchmark a heading, a table (one column per checkpoint, then the differences to the
    baseline and the published value) and its verdict."""
    if not pivot.groups:
        return []
    intro = "One row per benchmark metric, one column per checkpoint; the best of each row in bold. " + (
        f"Δ columns: the difference to {pivot.baseline} (--baseline)." if pivot.baseline
        else "No baseline column, so no differences.")
    lines = ["## Summary\n", text(intro), "", text(pivot.method), ""]
    for g in pivot.groups:
        rows = []
        for r in g.rows:  # numbers are written here; only text from records needs escaping
            row = {"metric": text(r.metric)}
            row.update({text(c): cell_text(r.cells.get(c), bold=lambda t: f"**{t}**") for c in pivot.columns})
            row.update({text(f"Δ {c}"): cell_text(r.diffs.get(c), signed=True) for c in pivot.diff_columns})
            row["published"] = text(r.published)
            rows.append(row)
        body = pd.DataFrame(rows)
        lines += [f"### {text(g.table)} — {text(g.dataset or 'unnamed dataset')}\n"]
        if not g.comparable:
            lines += [text(g.note), ""]
        lines += [body.to_markdown(index=False, disable_numparse=True), "",
                  "Verdict: " + text("; ".join(g.verdict)) + "\n"]
    return lines
