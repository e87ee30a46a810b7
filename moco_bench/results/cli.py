"""``moco-bench tables RESULTS... [--published] [-o DIR]``: compile results into tables, plots and a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from moco_bench.core.errors import ConfigError, DataError


def _tables(args) -> int:
    from moco_bench.results.published import DEFAULT_CSV
    from moco_bench.results.report import write_report
    from moco_bench.results.tables import parse_reference

    try:
        reference = parse_reference(args.reference)
    except ValueError as e:
        raise ConfigError(f"--reference: {e}") from None
    missing = [str(p) for p in args.results if not p.exists()]
    if missing:
        raise DataError(f"{', '.join(missing)}: no such results file or folder (the report was left as it was)")
    published = (args.published_csv or DEFAULT_CSV) if args.published else None
    report = write_report(args.results, args.out, published=published, reference=reference)
    print(f"report: {report}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("tables", help="compile result files into tables and plots beside published numbers",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("results", nargs="+", type=Path, help="result files or folders (searched recursively)")
    p.add_argument("-o", "--out", type=Path, default=Path("results/report"), help="output folder")
    p.add_argument("--published", action="store_true", help="set the published numbers beside ours")
    p.add_argument("--published-csv", type=Path, default=None,
                   help="published numbers CSV (default: results/published/numbers.csv of the checkout)")
    p.add_argument("--reference", default=None, metavar="'METHOD EPOCHS'",
                   help="hold every result against the published rows of this recipe (e.g. 'MoCo v1 200') instead "
                        "of the recipe each checkpoint records")
    p.set_defaults(func=_tables)
