"""``moco-bench tables RESULTS... [--published] [-o DIR]``: compile results into tables, plots and a report."""

from __future__ import annotations

from pathlib import Path

from moco_bench.results.published import DEFAULT_CSV
from moco_bench.results.report import write_report


def _tables(args) -> int:
    report = write_report(args.results, args.out, published=args.published_csv if args.published else None)
    print(f"report: {report}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("tables", help="compile result files into tables and plots beside published numbers")
    p.add_argument("results", nargs="+", type=Path, help="result files or folders (searched recursively)")
    p.add_argument("-o", "--out", type=Path, default=Path("results/report"), help="output folder")
    p.add_argument("--published", action="store_true", help="set the published numbers beside ours")
    p.add_argument("--published-csv", type=Path, default=DEFAULT_CSV, help="published numbers CSV")
    p.set_defaults(func=_tables)
