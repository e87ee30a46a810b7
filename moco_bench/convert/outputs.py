"""The files a conversion leaves in its output folder: the weights and the key report beside them."""

from __future__ import annotations

from pathlib import Path

from moco_bench.convert.backbone import ConvertedBackbone, write_torchvision
from moco_bench.convert.detectron2 import write_detectron2
from moco_bench.core.errors import CheckpointError, ResultExistsError

TARGETS = ("torchvision", "detectron2", "both")
NAMES = {"torchvision": "backbone.pth", "detectron2": "backbone.pkl", "report": "convert_report.json"}
_WRITERS = {"torchvision": write_torchvision, "detectron2": write_detectron2}


def write_outputs(backbone: ConvertedBackbone, out_dir: str | Path, to: str = "both",
                  force: bool = False) -> dict[str, Path]:
    """Write ``backbone.pth`` and/or ``backbone.pkl`` and ``convert_report.json`` into ``out_dir``.

    Nothing is overwritten unless ``force``; if a write fails, the files of this call are removed again.
    """
    if to not in TARGETS:
        raise ValueError(f"to must be one of {TARGETS}, got {to!r}")
    if backbone.format == "pixels":
        raise CheckpointError(f"{backbone.path}: the raw-pixel reference has no weights to write")
    kinds = ["torchvision", "detectron2"] if to == "both" else [to]
    paths = {kind: Path(out_dir) / NAMES[kind] for kind in [*kinds, "report"]}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not force:
        raise ResultExistsError(f"{', '.join(existing)} already exist; pass --force to overwrite")
    written = []
    try:
        for kind in kinds:
            written.append(_WRITERS[kind](backbone, paths[kind]))
            backbone.report.outputs[kind] = str(paths[kind])
        backbone.report.outputs["report"] = str(paths["report"])
        backbone.report.write(paths["report"])
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return paths
