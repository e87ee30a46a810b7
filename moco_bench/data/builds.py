"""Building an embedded dataset once: written in a temporary folder, moved into place with a manifest of its
options, so a second build with the same options does nothing and one with other options is refused (rather
than rebuilt silently under existing feature caches)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from moco_bench.core.atomic import named
from moco_bench.core.errors import DataError

MANIFEST = ".built.json"
ITEM_THRESHOLD = 32  # pixel value above which an item pixel belongs to its mask and box


def build_once(out: Path, options: dict, writer: Callable[..., None], force: bool = False) -> Path:
    """Build ``out`` with ``writer(tmp, **options)`` (``kind`` left out) in a temporary folder moved into place, and
    record ``options`` in its manifest: a second call with the same options does nothing, one with other options
    is refused unless ``force``."""
    out = Path(out)
    manifest = out / MANIFEST
    if manifest.is_file():
        built = json.loads(manifest.read_text())
        if built == options and not force:
            return out
        if not force:
            raise DataError(f"{out}: built with other options ({built}); asked for {options}. "
                            "Pass --force to rebuild it or choose another folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        writer(tmp, **{k: v for k, v in options.items() if k != "kind"})
        (tmp / MANIFEST).write_text(json.dumps(options, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except OSError as e:  # a full disk names no file: say which dataset was being written
        raise named(e, out) from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
