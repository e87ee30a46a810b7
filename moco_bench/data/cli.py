"""``moco-bench data build NAME [key=value ...]``: build an embedded dataset into the cache."""

from __future__ import annotations

import argparse
from pathlib import Path

from moco_bench.core.errors import ConfigError


def parse_options(items) -> dict:
    """``key=value`` pairs with YAML values (``canvas=[96,128]``, ``n_test=50``)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"option {item!r}: expected key=value")
        out[key] = yaml.safe_load(value)
    return out


def _build(args) -> int:
    from moco_bench.data import embedded

    try:
        path = embedded.build(args.name, root=args.root, force=args.force, **parse_options(args.options))
    except TypeError as e:
        raise ConfigError(f"embedded dataset {args.name!r}: {e}") from None
    print(path)
    return 0


def register(sub) -> None:
    data = sub.add_parser("data", help="embedded datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    b = dsub.add_parser("build", help="build an embedded dataset into the cache",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("name", choices=["imagefolder", "minivoc", "minicoco", "deepforest", "minilvis", "minicityscapes",
                                     "minivocseg"])
    b.add_argument("options", nargs="*", help="sizes as key=value, e.g. n_trainval=300 canvas=[96,128]")
    b.add_argument("--root", type=Path, default=None, help="output root (default: $MOCO_BENCH_DATA/embedded)")
    b.add_argument("--force", action="store_true", help="rebuild even if built with other options")
    b.set_defaults(func=_build)
