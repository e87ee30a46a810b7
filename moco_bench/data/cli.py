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


def _check(args) -> int:
    """The datasets an evaluation config reads, checked as an evaluation would check them before any work."""
    from omegaconf import OmegaConf

    from moco_bench.core.config import load_config
    from moco_bench.core.paths import project_file
    from moco_bench.data.readers import open_split
    from moco_bench.data.sources import check_sources

    path = project_file(args.config if args.config.endswith(".yaml") else f"evaluate/{args.config}.yaml")
    cfg = OmegaConf.to_container(load_config(path), resolve=True)
    if "datasets" in cfg:
        ds = cfg["datasets"]
        names = list(ds["train"]) + list(ds["test"])
        summary = check_sources({n: ds["sources"][n] for n in names}, ds["test"], ds.get("classes"), str(path))
        for name, counts in summary.items():
            print(f"{name}: ok, {counts['images']} images")
        return 0
    data = cfg["data"]
    for split in dict.fromkeys([data["train_split"], data["test_split"]]):
        dataset = open_split(data, split, source=str(path))
        expected = (data.get("expect") or {}).get(split)
        print(f"{data['name']} {split}: ok, {len(dataset)} images in {len(dataset.classes)} classes"
              + (" (the published count)" if expected else " (no published count to hold it against)"))
    return 0


def register(sub) -> None:
    data = sub.add_parser("data", help="embedded datasets; dataset checks")
    dsub = data.add_subparsers(dest="data_command", required=True)
    b = dsub.add_parser("build", help="build an embedded dataset into the cache",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("name", choices=["imagefolder", "minivoc", "minicoco", "deepforest", "minilvis", "minicityscapes",
                                     "minivocseg"])
    b.add_argument("options", nargs="*", help="sizes as key=value, e.g. n_trainval=300 canvas=[96,128]")
    b.add_argument("--root", type=Path, default=None, help="output root (default: $MOCO_BENCH_DATA/embedded)")
    b.add_argument("--force", action="store_true", help="rebuild even if built with other options")
    b.set_defaults(func=_build)
    c = dsub.add_parser("check", help="check the datasets an evaluation config reads (layout, classes, image counts)",
                        description="Opens every split the config names exactly as the evaluation would, before any "
                                    "compute: a missing folder, another class count or a partial copy (an image count "
                                    "other than the published one) is an error naming the folder.")
    c.add_argument("config", metavar="NAME", help="an evaluate/ config: its name (voc07_svm) or its path")
    c.set_defaults(func=_check)
