"""Write the compiled tables (Markdown, CSV, LaTeX, HTML), the plots and one report page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Sequence

import pandas as pd

from moco_bench.core.atomic import atomic_write_text
from moco_bench.results.plots import plot_tables
from moco_bench.results.published import DEFAULT_CSV, load_published
from moco_bench.results.schema import now
from moco_bench.results.store import load_results
from moco_bench.results.tables import Reference, compile_tables, status_table, summary_table


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def _display(df: pd.DataFrame, numeric: Sequence[str] = ("value",)) -> pd.DataFrame:
    out = df.copy()
    for col in (*numeric, "delta"):
        if col in out:
            out[col] = [("" if pd.isna(v) else f"{v:+.2f}" if col == "delta" else f"{v:.2f}") for v in out[col]]
    out = out.astype(object)
    return out.where(out.notna(), "")


def _write_table(table: pd.DataFrame, shown: pd.DataFrame, base: Path) -> None:
    atomic_write_text(base.with_suffix(".csv"), table.to_csv(index=False))
    atomic_write_text(base.with_suffix(".md"), shown.to_markdown(index=False, disable_numparse=True) + "\n")
    atomic_write_text(base.with_suffix(".tex"), shown.to_latex(index=False, escape=True))
    atomic_write_text(base.with_suffix(".html"), shown.to_html(index=False))


def write_report(results: Sequence[Path | str], out_dir: Path | str, published: Path | str | None = DEFAULT_CSV,
                 reference: Reference = None) -> Path:
    """Compile every result under ``results`` into ``out_dir``; returns the path of ``report.md``.

    ``reference``: ``(method, epochs)`` of the published rows to hold every result against, instead of each
    checkpoint's recorded recipe.
    """
    out_dir = Path(out_dir)
    df = load_results([Path(p) for p in results])
    pub = load_published(published) if published else None
    tables = compile_tables(df, pub, reference) if not df.empty else {}
    lines: List[str] = ["# moco-bench report\n", f"Generated {now()} from: {', '.join(map(str, results))}.\n"]
    html: List[str] = [f"<h1>moco-bench report</h1><p>Generated {now()}.</p>"]
    summary = summary_table(df) if not df.empty else pd.DataFrame()
    if not summary.empty:
        shown = _display(summary, numeric=summary.columns[4:])
        _write_table(summary, shown, out_dir / "tables" / "summary")
        lines += ["## Summary: our checkpoints side by side\n", "Datasets and published rows are in the per-benchmark "
                  "tables below.\n", shown.to_markdown(index=False, disable_numparse=True), ""]
        html += ["<h2>Summary: our checkpoints side by side</h2>", shown.to_html(index=False)]
    for name, table in tables.items():
        shown = _display(table)
        _write_table(table, shown, out_dir / "tables" / _slug(name))
        lines += [f"## {name}\n", shown.to_markdown(index=False, disable_numparse=True), ""]
        html += [f"<h2>{name}</h2>", shown.to_html(index=False)]
    for png in plot_tables(tables, out_dir / "plots"):
        lines.append(f"![{png.stem}](plots/{png.name})\n")
        html.append(f'<h2>{png.stem}</h2><img src="plots/{png.name}">')
    if not df.empty and not (bad := status_table(df)).empty:
        lines += ["## Not finished (failed or skipped)\n", bad.to_markdown(index=False, disable_numparse=True), ""]
        html += ["<h2>Not finished</h2>", bad.to_html(index=False)]
    if skipped := df.attrs.get("skipped"):
        lines += ["## Files that are not moco-bench results (skipped)\n",
                  pd.DataFrame(skipped).to_markdown(index=False, disable_numparse=True), ""]
        html += ["<h2>Skipped files</h2>", pd.DataFrame(skipped).to_html(index=False)]
    if not tables:
        lines.append("No finished results were found.\n")
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    atomic_write_text(out_dir / "report.html", "<html><body>" + "\n".join(html) + "</body></html>\n")
    return report
