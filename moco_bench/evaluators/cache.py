"""The feature cache on disk: one folder per (checkpoint, dataset split, transform, precision), holding one
``.npy`` per pooled layer beside a JSON manifest that states what produced it.

Complete entries are read without any lock, so a finished cache can be read from a read-only folder. Writers
take a per-entry lock, sweep temporaries left by writers that no longer run, check that the arrays fit on the
disk before a pass starts (their size is known in advance), and append rows with ordinary writes, so that a
full disk is an ordinary error naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Mapping, Sequence

import numpy as np

from moco_bench.core.atomic import atomic_write_text, human_bytes, named
from moco_bench.core.errors import DataError
from moco_bench.core.locks import waiting

log = logging.getLogger(__name__)


def digest(obj: Any, n: int = 20) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:n]


def check_free_space(folder: Path, nbytes: int, what: str) -> None:
    """Refuse a write of ``nbytes`` into ``folder`` that its file system cannot hold (with a 1% margin)."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if nbytes * 1.01 > free:
        raise DataError(f"{what}: the features need {human_bytes(nbytes)} in {folder}, which has "
                        f"{human_bytes(free)} free; free space or point $MOCO_BENCH_DATA elsewhere")


class RowWriter:
    """An ``(n, dim)`` float32 ``.npy`` written row block by row block into ``.<name>.<pid>.tmp`` beside it and
    renamed into place by :meth:`finish`; :meth:`discard` removes what is left."""

    def __init__(self, path: Path, n: int, dim: int):
        self.path, self.n, self.rows = Path(path), n, 0
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.file = open(self.tmp, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False, "shape": (n, dim)}
        np.lib.format.write_array_header_1_0(self.file, header)

    def write(self, rows: np.ndarray) -> None:
        try:
            self.file.write(np.ascontiguousarray(rows, dtype="<f4").tobytes())
        except OSError as e:  # a full disk: say which file
            raise named(e, self.tmp) from e
        self.rows += len(rows)

    def finish(self) -> None:
        if self.rows != self.n:
            raise DataError(f"{self.path}: {self.rows} rows written, {self.n} expected")
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
        except OSError as e:
            raise named(e, self.tmp) from e
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        """Drop the partial file; closing may fail to flush its buffer (a full disk), which no longer matters."""
        try:
            self.file.close()
        except OSError:
            pass
        self.tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class CacheEntry:
    """One cache folder: ``manifest.json`` + ``<layer>-<pooling digest>.npy`` files."""

    def __init__(self, root: Path, key: dict):
        self.key = key
        self.dir = Path(root) / digest(key)
        self.manifest_path = self.dir / "manifest.json"

    def manifest(self) -> dict:
        try:
            doc = json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {"key": self.key, "layers": {}}
        if doc.get("key") != self.key:  # same folder, other producer: a hash collision or a hand-copied folder
            log.warning("%s: feature cache made by %s, not by this request; recomputing", self.dir,
                        doc.get("key", {}).get("checkpoint"))
            return {"key": self.key, "layers": {}, "stale": "recomputed: manifest names another checkpoint or dataset"}
        return doc

    @staticmethod
    def file_name(layer: str, pooling: Mapping) -> str:
        return f"{layer}-{digest(dict(pooling), 8)}.npy"

    def load(self, doc: dict, layer: str, pooling: Mapping, n: int) -> tuple[np.ndarray | None, str]:
        """(memmap, "hit") or (None, why it cannot be used)."""
        name = self.file_name(layer, pooling)
        meta = doc["layers"].get(name)
        if meta is None:
            return None, doc.get("stale", "miss")
        path = self.dir / name
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            return None, f"recomputed: {path.name} unreadable ({e})"
        if arr.dtype != np.float32 or arr.ndim != 2 or list(arr.shape) != meta["shape"] or arr.shape[0] != n:
            return None, f"recomputed: {path.name} has shape {arr.shape} {arr.dtype}, expected {meta['shape']}"
        if path.stat().st_size != arr.offset + arr.nbytes:
            return None, f"recomputed: {path.name} has {path.stat().st_size} bytes, expected {arr.offset + arr.nbytes}"
        return arr, "hit"

    def read(self, layers: Sequence[str], pooling: Mapping, n: int):
        """``({layer: memmap}, {layer: "hit" | "miss" | "recomputed: <why>"})`` of what the entry holds."""
        doc = self.manifest()
        found, status = {}, {}
        for name in layers:
            arr, why = self.load(doc, name, pooling[name], n)
            if arr is not None:
                found[name] = arr
            status[name] = why
        return found, status

    def record(self, layers: Sequence[str], pooling: Mapping, outputs: Mapping[str, Path]) -> Dict[str, np.ndarray]:
        """Add freshly written ``layers`` to the manifest (atomically); returns them as memory maps."""
        doc = self.manifest()
        doc.pop("stale", None)
        found = {}
        for name in layers:
            arr = np.load(outputs[name], mmap_mode="r")
            doc["layers"][outputs[name].name] = {"layer": name, "pooling": pooling[name], "shape": list(arr.shape),
                                                 "dtype": "float32"}
            found[name] = arr
        atomic_write_text(self.manifest_path, json.dumps(doc, indent=1, sort_keys=True))
        return found

    def sweep(self) -> None:
        """Remove temporaries whose writer (the pid in their name) no longer runs."""
        for tmp in self.dir.glob(".*.tmp"):
            pid = tmp.name.rsplit(".", 2)[-2]
            if pid.isdigit() and not _alive(int(pid)):
                log.warning("%s: removing %s, left by an interrupted writer", self.dir, tmp.name)
                tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self):
        """Serialize extraction of one entry between processes (a suite may run evaluators side by side: the
        second waits, saying for whom); the holder first sweeps what interrupted writers left."""
        with waiting(self.dir / ".lock", f"feature cache {self.dir}"):
            self.sweep()
            yield



