"""Per-example outputs of an evaluation, kept beside its record as ``<evaluation>.examples.npz``, so that the report
can resample the test images: a bootstrap interval for a single run's number, and the paired difference of two
checkpoints measured on the same images.

An evaluator returns them in ``EvalOutput.examples``: ``{"images": [test image paths], "root": folder they are
relative to, "metrics": {metric: outputs}}`` where ``outputs`` is ``{"kind": "accuracy", "hits": (N,) bool}`` (the
metric is 100 x the mean: kNN and linear top-1) or ``{"kind": "map", "scores": (N, C), "targets": (N, C) in
{1, -1, 0}}`` (100 x the mean over classes of the all-points AP: the VOC07 SVM). The file is an uncompressed npz
(hits as packed bits; scores as float64, so that the AP ranks by them exactly as the protocol did); the record's
``examples`` block names it with its size and sha256, the number of test images and a digest of their relative
names (two records are paired only when their digests agree).

Reading trusts nothing in the file: every array's header is parsed and checked (dtype, shape, size) before a byte
of it becomes an array, so a crafted file cannot make a huge allocation or unpickle anything.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping

import numpy as np

from moco_bench.core.atomic import atomic_write_bytes
from moco_bench.results.files import NotReadable, read_regular

SUFFIX = ".examples.npz"
MAX_BYTES = 256 << 20  # ImageNet kNN hits are 25 kB, five layers of VOC07 SVM scores 5 MB
KINDS = {"accuracy": ("hits",), "map": ("scores", "targets")}  # the arrays of each kind


@dataclass(frozen=True)
class Examples:
    """One metric's per-example outputs: ``hits`` (N,) bool, or ``scores`` (N, C) and ``targets`` (N, C)."""

    kind: str
    n: int
    images_sha256: str
    arrays: Mapping[str, np.ndarray]


def sidecar(record_path: Path) -> Path:
    """Where the examples of the record at ``record_path`` (``<evaluation>.json``) are kept."""
    return Path(record_path).with_name(Path(record_path).stem + SUFFIX)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _arrays_of(name: str, outputs: Mapping[str, Any], n: int) -> Dict[str, np.ndarray]:
    kind = outputs.get("kind")
    if kind == "accuracy":
        hits = np.asarray(outputs["hits"], dtype=bool).ravel()
        if hits.shape != (n,):
            raise ValueError(f"examples of {name}: {hits.shape[0]} hits for {n} test images")
        return {"hits": np.packbits(hits)}
    if kind == "map":
        scores, targets = np.asarray(outputs["scores"], np.float64), np.asarray(outputs["targets"], np.int8)
        if scores.ndim != 2 or scores.shape != targets.shape or scores.shape[0] != n:
            raise ValueError(f"examples of {name}: scores {scores.shape} and targets {targets.shape} for {n} images")
        return {"scores": scores, "targets": targets}
    raise ValueError(f"examples of {name}: unknown kind {kind!r} (one of {', '.join(KINDS)})")


def save_examples(path: Path, examples: Mapping[str, Any]) -> Dict[str, Any]:
    """Write ``examples`` (an evaluator's) to ``path`` atomically; returns the record's ``examples`` block."""
    root = examples.get("root")
    images = [os.path.relpath(str(p), str(root)) if root else str(p) for p in examples["images"]]
    arrays, metrics = {}, {}
    for i, (name, outputs) in enumerate(examples["metrics"].items()):
        for key, array in _arrays_of(name, outputs, len(images)).items():
            arrays[f"m{i}_{key}"] = array
        metrics[name] = {"kind": outputs["kind"], "key": f"m{i}"}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    atomic_write_bytes(Path(path), data)
    return {"file": Path(path).name, "bytes": len(data), "sha256": _sha256(data), "images": len(images),
            "images_sha256": _sha256("\n".join(images).encode()), "metrics": metrics}


def _npy(file: Path, name: str, member: bytes) -> np.ndarray:
    """One ``.npy`` member as an array, its header checked against its size first (never ``np.load``)."""
    f = io.BytesIO(member)
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
    except ValueError as e:
        raise NotReadable(f"{file}: member {name} is not a plain .npy array ({e})") from None
    if dtype.hasobject or dtype.kind not in "biuf" or fortran or len(shape) > 2:
        raise NotReadable(f"{file}: member {name} holds {dtype} {shape}, not a plain number array")
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != len(member) - f.tell():
        raise NotReadable(f"{file}: member {name} claims shape {shape} of {dtype}, which its size does not hold")
    return np.frombuffer(member, dtype=dtype, offset=f.tell()).reshape(shape)


def _members(file: Path, data: bytes) -> Dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
            bad = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED or i.file_size > len(data)
                   or not i.filename.endswith(".npy")]
            if bad:
                raise NotReadable(f"{file}: member {bad[0]} is compressed or not an .npy array (this file is "
                                  "written uncompressed)")
            return {i.filename[:-4]: _npy(file, i.filename, z.read(i)) for i in infos}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
        raise NotReadable(f"{file}: not an npz archive ({e})") from None


def _checked(file: Path, name: str, kind: str, arrays: Dict[str, np.ndarray], n: int) -> Dict[str, np.ndarray]:
    """The metric's arrays, unpacked and checked against the number of test images."""
    if kind == "accuracy":
        packed = arrays["hits"]
        if packed.dtype != np.uint8 or packed.shape != ((n + 7) // 8,):
            raise NotReadable(f"{file}: hits of {name} do not hold {n} test images")
        return {"hits": np.unpackbits(packed, count=n).astype(bool)}
    scores, targets = arrays["scores"], arrays["targets"]
    if scores.dtype != np.float64 or targets.dtype != np.int8 or scores.ndim != 2 or scores.shape != targets.shape \
            or scores.shape[0] != n:
        raise NotReadable(f"{file}: scores and targets of {name} do not hold {n} test images")
    if not np.isfinite(scores).all() or not np.isin(targets, (-1, 0, 1)).all():
        raise NotReadable(f"{file}: scores of {name} are not finite, or targets not in 1/-1/0")
    return {"scores": scores, "targets": targets}


def load_examples(record_path: Path, block: Mapping[str, Any]) -> Dict[str, Examples]:
    """``{metric: Examples}`` from a record's ``examples`` block; :class:`NotReadable` names the file and what is
    wrong (missing, changed since the run, malformed)."""
    name = str(block.get("file", ""))
    if not name or Path(name).name != name:
        raise NotReadable(f"{record_path}: examples file {name!r} is not a file name beside the record")
    file = Path(record_path).parent / name
    try:
        n, digest, metrics = int(block["images"]), str(block["images_sha256"]), dict(block["metrics"])
        data = read_regular(file, MAX_BYTES)
    except (KeyError, TypeError, ValueError) as e:
        raise NotReadable(f"{record_path}: malformed examples block ({e})") from None
    except FileNotFoundError:
        raise NotReadable(f"{file}: missing (the record names it)") from None
    if _sha256(data) != block.get("sha256"):
        raise NotReadable(f"{file}: its sha256 differs from the record's (changed after the run)")
    members, out = _members(file, data), {}
    for metric, spec in metrics.items():
        kind, key = (spec.get("kind"), spec.get("key")) if isinstance(spec, dict) else (None, None)
        if kind not in KINDS or any(f"{key}_{a}" not in members for a in KINDS[kind]):
            raise NotReadable(f"{file}: no {kind or 'known'} outputs for metric {metric!r}")
        arrays = {a: members[f"{key}_{a}"] for a in KINDS[kind]}
        out[metric] = Examples(kind, n, digest, _checked(file, metric, kind, arrays, n))
    return out
