"""The key report of a conversion: every tensor of the checkpoint, and what became of it."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from moco_bench.convert.arch import CLASSIFIER_KEYS
from moco_bench.core.atomic import atomic_write_text


@dataclass
class KeyReport:
    """What a conversion used, left out and could not place.

    Attributes:
        used: file key -> torchvision key, for every backbone tensor kept.
        dropped: file key -> reason, for tensors left out on purpose (heads, momentum encoder, queue).
        unexpected: file keys that no rule of the layout explains, or that the architecture does not have.
        missing: torchvision keys the checkpoint lacks, the classifier excepted (a backbone has none).
        shape_mismatches: torchvision key -> file key, checkpoint shape and expected shape; never loaded.
        detectron2: torchvision key -> detectron2 key, filled when a detectron2 file is written.
        arch_note: how the architecture was recognized (tensors, the file's own record) and, for a small-image
            variant, what it is.
        epoch: pretraining epochs completed; ``epoch_note`` says how the file's fields were read.
        weights: the copy converted (key prefix, role, and why it was chosen); ``copies``: every copy of the
            network in the file, chosen or not, and whether its tensors equal the chosen one's.
        reader: how the file was read; ``placeholders``: globals the file names that were kept as inert
            placeholders (never imported or run) because they are not tensors or plain values.
        source_dtypes: dtype -> number of the floating-point tensors used that the file stored in it; all are
            converted to float32, the evaluators' dtype (exactly from float16 and bfloat16).
    """

    source: str
    format: str
    location: str
    arch: str
    epoch: int | None
    arch_note: str = ""
    epoch_note: str = ""
    weights: dict[str, str] = field(default_factory=dict)
    copies: list[dict] = field(default_factory=list)
    reader: str = ""
    placeholders: list[str] = field(default_factory=list)
    source_dtypes: dict[str, int] = field(default_factory=dict)
    used: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    shape_mismatches: dict[str, dict] = field(default_factory=dict)
    classifier_missing: list[str] = field(default_factory=lambda: list(CLASSIFIER_KEYS))
    detectron2: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def problems(self, allow_missing: bool = False) -> list[str]:
        """Why the conversion must not be trusted; missing and unexpected keys pass with ``allow_missing``."""
        out = [f"shape mismatch {k}: checkpoint {v['checkpoint']} vs {self.arch} {v['expected']} "
               f"({v['file_key']})" for k, v in self.shape_mismatches.items()]
        if not allow_missing:
            if self.missing:
                out.append(f"{len(self.missing)} backbone keys missing: {_short(self.missing)}")
            if self.unexpected:
                out.append(f"{len(self.unexpected)} unexpected keys: {_short(self.unexpected)}")
        return out

    def summary(self) -> str:
        epoch = "unknown" if self.epoch is None else self.epoch
        lines = [f"{self.source}: format {self.format}, arch {self.arch}, epochs completed {epoch} "
                 f"(weights in {self.location})"]
        if self.arch_note:
            lines.append(f"  arch: {self.arch_note}")
        if self.epoch_note:
            lines.append(f"  epochs: {self.epoch_note}")
        if self.weights.get("prefix"):
            lines.append(f"  weights: the {self.weights['role']} copy {self.weights['prefix']}.* "
                         f"({self.weights['chosen_by']})")
        for copy in self.copies:
            if not copy["chosen"]:
                same = "identical to the chosen copy" if copy["same_as_chosen"] else "differs from the chosen copy"
                lines.append(f"  other copy: {copy['role']} {copy['prefix']}.* ({copy['what']}, {copy['tensors']} "
                             f"tensors, {same}; --weights {copy['role']} or --weights {copy['prefix']})")
        if self.reader:
            lines.append(f"  read with {self.reader}")
        if self.placeholders:
            lines.append(f"  kept as inert placeholders (not weights, never imported or run): "
                         f"{', '.join(self.placeholders)}")
        if set(self.source_dtypes) - {"float32"}:
            stored = ", ".join(f"{n} {dtype}" for dtype, n in sorted(self.source_dtypes.items()))
            rounded = " (float64 rounded to nearest)" if "float64" in self.source_dtypes else " (exactly)"
            lines.append(f"  stored as {stored}; converted to float32{rounded}")
        lines.append(f"  used {len(self.used)} tensors; missing {len(self.missing)} (+ classifier "
                     f"{', '.join(self.classifier_missing)}, expected); unexpected {len(self.unexpected)}; "
                     f"shape mismatches {len(self.shape_mismatches)}")
        for reason, n in sorted(Counter(self.dropped.values()).items()):
            lines.append(f"  dropped {n} on purpose: {reason}")
        lines += [f"  wrote {kind}: {path}" for kind, path in self.outputs.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)

    def write(self, path: Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")


def _short(keys: list[str], limit: int = 8) -> str:
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
