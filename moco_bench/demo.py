"""``make demo``: the whole pipeline on embedded data, pretrained features set beside random ones.

Builds the embedded datasets, pretrains the demo recipe, runs the demo suite on the final checkpoint and on
the same architecture at random initialization, runs its kNN and linear protocols on the raw pixels (``pixels:``,
the reference line that says what the features add), and compiles the report (tables and plots beside the
published numbers, which the demo is not comparable with: the report says why once for each group of rows).
Every stage resumes: finished pretraining epochs and finished evaluations are not redone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional

from moco_bench.core.errors import MocoBenchError
from moco_bench.core.helpfmt import DefaultsHelpFormatter

log = logging.getLogger(__name__)
PRETRAIN_CONFIG = "pretrain/mocov2_demo_fmnist.yaml"  # relative to the project root
SUITE = "suites/demo.yaml"


def run_demo(out: Path | str = "results/demo", pretrain_overrides: Optional[List[str]] = None,
             suite_overrides: Optional[List[str]] = None, data: Optional[Dict[str, dict]] = None,
             suite: Path | str = SUITE) -> Path:
    """Run the demo into ``out``; returns the report's path. ``data`` gives embedded-dataset sizes by name."""
    from moco_bench.core.paths import config_file
    from moco_bench.data import embedded
    from moco_bench.engine.eval_all import eval_all
    from moco_bench.engine.suite import load_suite
    from moco_bench.evaluators.catalog import pixel_protocols
    from moco_bench.pretrain.schema import load_recipe
    from moco_bench.pretrain.train import pretrain
    from moco_bench.results.report import write_report

    out = Path(out)
    data = data or {}
    seconds: Dict[str, float] = {}
    t0 = time.perf_counter()
    embedded.build("imagefolder", **data.get("imagefolder", {}))
    embedded.build("minicoco", **data.get("minivoc", {}))
    seconds["data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cfg = load_recipe(config_file(PRETRAIN_CONFIG, "pretrain"),
                      [f"output_dir={out / 'pretrain'}", *(pretrain_overrides or [])])
    checkpoint = pretrain(cfg)
    if checkpoint is None:
        raise MocoBenchError(f"{out / 'pretrain'}: pretraining wrote no checkpoint")
    seconds["pretrain"] = time.perf_counter() - t0

    loaded = load_suite(suite, suite_overrides)
    pixel_suite = replace(loaded, entries=[e for e in loaded.entries if e.cfg.evaluator in pixel_protocols()])
    failed = []
    runs = (("pretrained", str(checkpoint), loaded, f"MoCo v2 demo ({cfg.optim.epochs} ep)"),
            ("random", f"random:{cfg.model.arch}", loaded, None), ("pixels", "pixels:", pixel_suite, None))
    for name, ckpt, chosen, label in runs:  # the baselines keep their default labels: random init <arch>, raw pixels
        if not chosen.entries:
            continue
        t0 = time.perf_counter()
        rows = eval_all(ckpt, chosen, out_root=out / "runs", label=label)
        failed += [f"{name}: {r['evaluation']}" for r in rows if r["status"] == "failed"]
        seconds[f"eval-all ({name})"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    report = write_report([out / "runs"], out / "report")
    seconds["tables"] = time.perf_counter() - t0
    summary = out / "report" / "tables" / "summary.md"
    if summary.is_file():
        print(summary.read_text())
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    print(f"demo done in {sum(seconds.values()):.0f} s ({timing})")
    print(f"report: {report}")
    if failed:
        raise MocoBenchError(f"demo evaluations failed: {', '.join(failed)} (see {report})")
    return report


def _demo(args) -> int:
    run_demo(args.out, args.pretrain_overrides, args.suite_overrides)
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="pretrain the demo recipe, run the demo suite, compile the report",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results/demo"))
    p.add_argument("--pretrain", dest="pretrain_overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides of pretrain/mocov2_demo_fmnist.yaml")
    p.add_argument("--suite-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides applied to every evaluation of suites/demo.yaml")
    p.set_defaults(func=_demo)
