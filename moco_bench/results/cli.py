"""``moco-bench tables RESULTS... [--published] [-o DIR]``: compile results into tables, plots and a report."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from moco_bench.core.errors import ConfigError, DataError
from moco_bench.core.helpfmt import DefaultsHelpFormatter


def _tables(args) -> int:
    from moco_bench.results.published import DEFAULT_CSV
    from moco_bench.results.report import write_report
    from moco_bench.results.tables import parse_reference
    from moco_bench.results.uncertainty import Settings

    try:
        reference = parse_reference(args.reference)
    except ValueError as e:
        raise ConfigError(f"--reference: {e}") from None
    missing = [str(p) for p in args.results if not p.exists()]
    if missing:
        raise DataError(f"{', '.join(missing)}: no such results file or folder (the report was left as it was)")
    if args.resamples < 100 or not 0 < args.confidence < 1:
        raise ConfigError(f"--resamples {args.resamples} / --confidence {args.confidence}: need at least 100 "
                          "resamples and a confidence between 0 and 1 (e.g. 0.95)")
    published = (args.published_csv or DEFAULT_CSV) if args.published else None
    settings = Settings(resamples=args.resamples, seed=args.seed, confidence=args.confidence)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        report = write_report(args.results, args.out, published=published, reference=reference,
                              baseline=args.baseline, settings=settings)
    for w in caught:  # a file that is not a result: one line naming it and why, not a warning with its source line
        if str(w.message).startswith("skipping "):
            print(f"moco-bench: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    print(f"report: {report}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("tables", help="compile result files into tables and plots beside published numbers",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("results", nargs="+", type=Path, help="result files or folders (searched recursively)")
    p.add_argument("-o", "--out", type=Path, default=Path("results/report"), help="output folder")
    p.add_argument("--published", action="store_true", help="set the published numbers beside ours")
    p.add_argument("--published-csv", type=Path, default=None,
                   help="published numbers CSV (default: results/published/numbers.csv of the checkout)")
    p.add_argument("--reference", default=None, metavar="'METHOD EPOCHS'",
                   help="hold every result against the published rows of this recipe (e.g. 'MoCo v1 200') instead "
                        "of the recipe each checkpoint records")
    p.add_argument("--baseline", default=None, metavar="LABEL",
                   help="the checkpoint (its label) the summary's differences are to (default: the random: one)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the test images")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap's numpy generator")
    p.add_argument("--confidence", type=float, default=0.95, help="level of every interval")
    p.set_defaults(func=_tables)
