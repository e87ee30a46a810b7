"""``moco-bench convert``: any supported checkpoint -> torchvision and/or detectron2 weights, with a key report."""

from __future__ import annotations

import argparse

from moco_bench.core.helpfmt import DefaultsHelpFormatter

TARGETS = ("torchvision", "detectron2", "both")  # moco_bench.convert.outputs; here so that --help imports no torch


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert", help="convert a self-supervised checkpoint to torchvision / detectron2 weights",
        formatter_class=DefaultsHelpFormatter,
        description="Detects the checkpoint layout and the ResNet architecture from the keys and shapes, writes "
                    "backbone.pth (torchvision state dict without fc) and/or backbone.pkl (detectron2, MoCo's "
                    "conversion rules) and convert_report.json into the output folder. CKPT may be a torch file "
                    "(.pth, .pth.tar, .ckpt), a .safetensors file or a detectron2 .pkl; nothing from it is run. "
                    "CKPT may also be random:<arch>[@seed] for a random-initialization baseline.")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--to", choices=TARGETS, default="both", help="which weights to write")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--format", default=None, metavar="NAME",
                   help="force a layout instead of detecting it from the keys (an unknown name lists the known)")
    p.add_argument("--weights", default=None, metavar="model|ema|teacher|student|momentum",
                   help="which copy of the network to convert when the file holds several (EMA, momentum encoder, "
                        "DINO teacher/student): a role, or a copy's key prefix as the report lists it; default: "
                        "the copy the format's reference evaluation uses")
    p.add_argument("--allow-missing", action="store_true",
                   help="accept missing backbone keys (left at their initialization) and unexpected keys; "
                        "use only when you know why they are absent")
    p.add_argument("--force", action="store_true", help="overwrite outputs already in DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moco_bench.convert.backbone import load_backbone
    from moco_bench.convert.outputs import write_outputs

    backbone = load_backbone(args.checkpoint, fmt=args.format, allow_missing=args.allow_missing,
                             weights=args.weights)
    write_outputs(backbone, args.out, to=args.to, force=args.force)
    print(backbone.report.summary())
    return 0
