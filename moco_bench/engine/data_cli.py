"""``moco-bench data build NAME [key=value ...]`` (an embedded dataset into the cache) and
``moco-bench data check [NAME | --config PATH] [key=value ...]`` (the datasets an evaluation reads, checked as
the evaluation checks them, and what the check means for comparability)."""

from __future__ import annotations

from pathlib import Path

from moco_bench.core.errors import ConfigError
from moco_bench.core.helpfmt import DefaultsHelpFormatter


def parse_options(items) -> dict:
    """``key=value`` pairs with YAML values (``canvas=[96,128]``, ``n_test=50``)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"option {item!r}: expected key=value")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"option {key}: {value!r} is not a YAML value ({str(e).splitlines()[0]})") from None
    return out


def _build(args) -> int:
    from moco_bench.data import embedded

    try:
        path = embedded.build(args.name, root=args.root, force=args.force, **parse_options(args.options))
    except TypeError as e:
        raise ConfigError(f"embedded dataset {args.name!r}: {e}") from None
    print(path)
    return 0


def _check(args) -> int:
    """Every split (or detection source) the config reads: opened and checked as the evaluation would, before any
    work; then whether the changed dataset locations leave the result comparable."""
    from moco_bench.core.config import resolved
    from moco_bench.core.paths import config_file
    from moco_bench.data.check import check_data
    from moco_bench.engine import comparability
    from moco_bench.evaluators.catalog import load_evaluation

    overrides = list(args.overrides)
    if args.name and "=" in args.name:  # `check --config X key=value`: argparse bound the override to NAME
        args.name, overrides = None, [args.name] + overrides
    name = args.config or args.name
    if not name:
        raise ConfigError("data check: name an evaluation config (voc07_svm, or --config evaluate/voc07_svm.yaml)")
    path = config_file(name, "evaluate")
    cfg = load_evaluation(path, overrides)
    check = check_data(resolved(cfg), str(path))
    published = comparability.published_counts(comparability.protocol_config(cfg)) \
        if cfg.comparability.get("protocol") else {}
    for split, summary in check.items():
        count, classes = summary["images"], summary.get("classes")
        ref = published.get(split)
        against = "no published count" if ref is None else "the published count" if ref == count else \
            f"the published split has {ref:,}"
        print(f"{split}: ok, {count:,} images" + (f" in {classes} classes" if classes else "") +
              f", fingerprint {summary['fingerprint']} ({against})")
    assessment = comparability.settle(comparability.assess(cfg), check, cfg)
    print(comparability.describe(assessment))
    return 0


def register(sub) -> None:
    data = sub.add_parser("data", help="embedded datasets; dataset checks")
    dsub = data.add_subparsers(dest="data_command", required=True)
    b = dsub.add_parser("build", help="build an embedded dataset into the cache",
                        formatter_class=DefaultsHelpFormatter)
    b.add_argument("name", choices=["imagefolder", "minivoc", "minicoco", "deepforest", "minilvis", "minicityscapes",
                                    "minivocseg"])
    b.add_argument("options", nargs="*", help="sizes as key=value, e.g. n_trainval=300 canvas=[96,128]")
    b.add_argument("--root", type=Path, default=None, help="output root (default: $MOCO_BENCH_DATA/embedded)")
    b.add_argument("--force", action="store_true", help="rebuild even if built with other options")
    b.set_defaults(func=_build)
    c = dsub.add_parser(
        "check", help="check the datasets an evaluation config reads (layout, classes, image counts)",
        description="Opens every split the config names exactly as the evaluation would, before any compute: a "
                    "missing folder, other classes or a partial copy (an image count other than the published one) "
                    "is an error naming the folder. Takes the same --config and key=value overrides as `eval`; a "
                    "changed data.root (or a source's folders) keeps a result comparable when every split holds "
                    "its published image count.")
    c.add_argument("name", nargs="?", metavar="NAME", help="an evaluate/ config by name (voc07_svm)")
    c.add_argument("--config", default=None, help="an evaluate/ config by name or path")
    c.add_argument("overrides", nargs="*", default=[], help="config overrides as key=value (data.root=/data/imagenet)")
    c.set_defaults(func=_check)
