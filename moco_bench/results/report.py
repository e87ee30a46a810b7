"""Write everything a report holds from one call: the HTML page, a Markdown report, and per table CSV, Markdown and
paper-ready LaTeX, the plots as PNG (embedded in the page) and PDF (for a paper)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pandas as pd

from moco_bench.core.atomic import atomic_write_bytes, atomic_write_text, replaced_folder
from moco_bench.core.errors import DataError
from moco_bench.results import latex, markdown, transfer
from moco_bench.results.page import render_page
from moco_bench.results.pivot import Pivot, build_pivot, records
from moco_bench.results.plots import figures, render
from moco_bench.results.published import DEFAULT_CSV, load_published
from moco_bench.results.schema import now
from moco_bench.results.store import load_results
from moco_bench.results.tables import Reference, compile_tables, status_table, summary_rows
from moco_bench.results.uncertainty import Settings, Uncertainty


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def _display(df: pd.DataFrame, numeric: Sequence[str] = ("value",)) -> pd.DataFrame:
    out = df.copy()
    for col in (*numeric, "delta"):
        if col in out:
            out[col] = [("" if pd.isna(v) else f"{v:+.2f}" if col == "delta" else f"{v:.2f}") for v in out[col]]
    out = out.astype(object)
    return out.where(out.notna(), "")


def _write_tables(out: Path, tables: Dict[str, pd.DataFrame], pivot: Pivot) -> List[str]:
    """CSV for every table, Markdown and LaTeX beside it; returns the Markdown report's lines for them."""
    lines = markdown.pivot_lines(pivot)
    if pivot.groups:
        atomic_write_text(out / "summary.csv", records(pivot).to_csv(index=False))
        atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
        atomic_write_text(out / "summary.tex", latex.pivot_table(pivot))
    held = summary_rows(tables)
    if not held.empty:
        atomic_write_text(out / "summary_vs_published.csv", held.to_csv(index=False))
        atomic_write_text(out / "summary_vs_published.tex", latex.summary_table(held))
    suite = transfer.suite_table(tables)
    if not suite.empty:  # the transfer suite: per-dataset columns and the mean the papers rank by
        atomic_write_text(out / "transfer_suite.csv", suite.to_csv(index=False))
        shown = markdown.table(_display(suite, transfer.numeric(suite)))
        lines += ["## transfer suite (mean over the datasets)\n", shown, ""]
    for name, table in tables.items():
        shown = markdown.table(_display(table.drop(columns=["comparability", "checkpoint", "file"])))
        atomic_write_text(out / f"{_slug(name)}.csv", table.to_csv(index=False))
        atomic_write_text(out / f"{_slug(name)}.md", shown + "\n")
        atomic_write_text(out / f"{_slug(name)}.tex", latex.benchmark_table(table, deltas=table["delta"].notna().any()))
        lines += [f"## {markdown.text(name)}\n", shown, ""]
    return lines


REPORT_ENTRIES = {"report.md", "report.html", "tables", "plots"}


def _is_report(folder: Path) -> bool:
    """A folder this function wrote (or an empty one): the only kind it replaces."""
    return folder.is_dir() and {p.name for p in folder.iterdir()} <= REPORT_ENTRIES


def write_report(results: Sequence[Path | str], out_dir: Path | str, published: Path | str | None = DEFAULT_CSV,
                 reference: Reference = None, baseline: Optional[str] = None,
                 settings: Optional[Settings] = None) -> Path:
    """Compile every result under ``results`` into ``out_dir``; returns the path of ``report.md``. The report is
    built in a new folder and swapped in at the end: an interrupted run keeps the previous report whole.

    ``reference``: ``(method, epochs)`` of the published rows to hold every result against, instead of each
    checkpoint's recorded recipe. ``baseline``: the label of the column the summary's differences are to (default:
    the ``random:`` checkpoint). ``settings``: how intervals are computed.
    """
    df = load_results([Path(p) for p in results])
    if df.empty:
        found = f"; {len(df.attrs['skipped'])} JSON file(s) that are not results" if df.attrs.get("skipped") else ""
        raise DataError(f"{', '.join(map(str, results))}: no moco-bench results found{found} (no report written)")
    pub = load_published(published) if published else None
    tables = compile_tables(df, pub, reference)
    unc = Uncertainty(df, settings or Settings())
    pivot = build_pivot(tables, unc, baseline)
    with replaced_folder(Path(out_dir), _is_report) as new:
        _write_all(new, df, tables, pivot, unc, [str(r) for r in results])
    return Path(out_dir) / "report.md"


def _bounds(tables: Dict[str, pd.DataFrame], unc: Uncertainty) -> dict:
    """The interval of every plotted (record, metric) of ours that has one."""
    out = {}
    for table in tables.values():
        for f, m in table.loc[table["row"] == "ours", ["file", "metric"]].itertuples(index=False):
            if (iv := unc.single(f, m)) is not None:
                out[(f, m)] = (iv.low, iv.high)
    return out


def _write_all(out_dir: Path, df: pd.DataFrame, tables: Dict[str, pd.DataFrame], pivot: Pivot, unc: Uncertainty,
               results: List[str]) -> None:
    generated = now()
    lines = ["# moco-bench report\n", markdown.text(f"Generated {generated} from: {', '.join(results)}.") + "\n",
             "The page to read is `report.html` (one self-contained file).\n"]
    lines += _write_tables(out_dir / "tables", tables, pivot)
    plots = []
    for fig in figures(tables, _bounds(tables, unc)):
        png, pdf, text_px = render(fig)
        atomic_write_bytes(out_dir / "plots" / f"{fig.key}.png", png)
        atomic_write_bytes(out_dir / "plots" / f"{fig.key}.pdf", pdf)
        lines.append(f"![{markdown.text(fig.caption)}](plots/{fig.key}.png)\n")
        plots.append((fig, png, text_px))
    if not (bad := status_table(df)).empty:
        atomic_write_text(out_dir / "tables" / "not_finished.csv", bad.to_csv(index=False))
        lines += ["## Not finished (failed or skipped)\n", markdown.table(bad), ""]
    if skipped := df.attrs.get("skipped"):
        atomic_write_text(out_dir / "tables" / "not_results.csv", pd.DataFrame(skipped).to_csv(index=False))
        lines += ["## Files that are not moco-bench results (skipped)\n", markdown.table(pd.DataFrame(skipped)), ""]
    if unc.problems:
        lines += ["## Results without an interval\n", *[f"- {markdown.text(p)}" for p in unc.problems], ""]
    if not tables:
        lines.append("No finished results were found.\n")
    atomic_write_text(out_dir / "report.md", "\n".join(lines) + "\n")
    atomic_write_text(out_dir / "report.html", render_page(df, tables, pivot, plots, results, generated, unc.problems))
