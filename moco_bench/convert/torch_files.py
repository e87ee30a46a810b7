"""torch.save files read with the inert unpickler, for when ``torch.load(weights_only=True)`` refuses them.

Both of torch's layouts are read: the zip archive (``<root>/data.pkl`` plus one record per storage under
``<root>/data/``) and the legacy stream (magic number, protocol, system info, the object pickle, the storage
keys, then each storage as a little-endian element count and its bytes). Storages are filled from the file
with ordinary tensor constructors; their sizes are checked against the file before anything is allocated.
:func:`precheck` looks at a file before torch or the inert unpickler reads it: zip records that inflate far
beyond their size, and the shape of every pickle (:mod:`moco_bench.convert.pickle_scan`).
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

from moco_bench.convert.inert_pickle import InertUnpickler
from moco_bench.convert.pickle_scan import PickleBomb, scan
from moco_bench.convert.rebuild import FlatStorage, StorageKind, brief

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER: the first pickle of a legacy file
LEGACY_PROTOCOL = 1001
# torch.save stores its records uncompressed, and trained weights hardly compress: a record that inflates more
# than this is a zip bomb (2 GiB of zeros deflate into 2 MB), refused before anything is decompressed.
MAX_INFLATION = 20


def legacy_prefixes() -> tuple[bytes, ...]:
    """How a legacy torch file starts: the magic number pickled at protocol 2 (torch's default) up to 5."""
    return tuple(pickle.dumps(MAGIC_NUMBER, protocol=p)[:-1] for p in range(2, 6))


def _storage_pid(pid: Any, length: int) -> tuple:
    """Check a storage persistent id: ('storage', kind, key, location, numel[, view])."""
    if type(pid) is not tuple or len(pid) != length:
        raise pickle.UnpicklingError(f"unexpected persistent id {brief(pid)}")
    typename = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    kind, key, numel = pid[1], pid[2], pid[4]
    if typename != "storage" or not isinstance(kind, StorageKind) or not isinstance(key, str):
        raise pickle.UnpicklingError(f"only storage records are accepted as persistent ids, got {brief(pid)}")
    if type(numel) is not int or numel < 0:
        raise pickle.UnpicklingError(f"storage {key}: bad element count {brief(numel)}")
    return pid


def precheck(path: Path, zipped: bool) -> set[str]:
    """Check a torch file before it is unpickled; returns the globals its pickles name.

    Raises:
        PickleBomb: a zip record inflates beyond :data:`MAX_INFLATION`, or a pickle is past the limits of
            :func:`~moco_bench.convert.pickle_scan.scan`.
        pickle.UnpicklingError, zipfile.BadZipFile: not a well-formed torch file.
    """
    if not zipped:
        with open(path, "rb") as f:  # magic number, protocol, system info, the object, the storage keys
            return set().union(*(scan(f) for _ in range(5)))
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_INFLATION * info.compress_size:
                raise PickleBomb(f"zip record {info.filename} inflates {_size(info.compress_size)} into "
                                 f"{_size(info.file_size)}; torch.save stores records uncompressed and weights "
                                 f"do not compress like that (a zip bomb), so nothing was decompressed")
        data = archive.read(_data_pkl(archive))
    return scan(io.BytesIO(data))


def _size(n: int) -> str:
    return next(f"{n / 2 ** e:.1f} {unit}" for e, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB"), (0, "B"))
                if n >= 2 ** e or e == 0)


def _data_pkl(archive: zipfile.ZipFile) -> str:
    pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise pickle.UnpicklingError(f"expected one <root>/data.pkl in the archive, found {len(pickles)}")
    return pickles[0]


def read_zip(path: Path) -> tuple[Any, InertUnpickler]:
    """The object of a zip-format torch file, tensors included, with the unpickler's findings."""
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        data_pkl = _data_pkl(archive)
        root = data_pkl[: -len("data.pkl")]
        if f"{root}constants.pkl" in names:
            raise pickle.UnpicklingError("a TorchScript archive, not a state dict (save model.state_dict())")
        order = archive.read(f"{root}byteorder").decode() if f"{root}byteorder" in names else "little"
        if order != sys.byteorder:
            raise pickle.UnpicklingError(f"storages are {order}-endian; this machine is {sys.byteorder}-endian")
        storages: dict[str, FlatStorage] = {}

        def storage(pid: Any) -> FlatStorage:
            _, kind, key, _, numel = _storage_pid(pid, 5)
            if key not in storages:
                record = f"{root}data/{key}"
                if record not in names or archive.getinfo(record).file_size != numel * kind.dtype.itemsize:
                    raise pickle.UnpicklingError(f"storage record {record} is missing or not {numel} elements")
                storages[key] = FlatStorage(_flat(archive.read(record), kind.dtype))
            return storages[key]

        unpickler = InertUnpickler(io.BytesIO(archive.read(data_pkl)), storage)
        return unpickler.load(), unpickler


def _flat(data: bytes, dtype: torch.dtype) -> torch.Tensor:
    if not data:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype)


def read_legacy(path: Path) -> tuple[Any, InertUnpickler]:
    """The object of a legacy (pre-1.6, or ``_use_new_zipfile_serialization=False``) torch file."""
    with open(path, "rb") as f:
        return read_legacy_stream(f, path.stat().st_size)


def read_legacy_stream(f: BinaryIO, size: int) -> tuple[Any, InertUnpickler]:
    """A legacy torch stream of ``size`` bytes (also what a plainly pickled tensor's storage holds)."""
    if InertUnpickler(f).load() != MAGIC_NUMBER or InertUnpickler(f).load() != LEGACY_PROTOCOL:
        raise pickle.UnpicklingError("not a legacy torch file (magic number or protocol differs)")
    info = InertUnpickler(f).load()
    if not isinstance(info, dict) or info.get("little_endian") is not (sys.byteorder == "little"):
        raise pickle.UnpicklingError("storages were written on a machine of the other byte order")
    storages: dict[str, FlatStorage] = {}

    def storage(pid: Any) -> FlatStorage:
        _, kind, key, _, numel, view = _storage_pid(pid, 6)
        if key not in storages:
            if numel * kind.dtype.itemsize > size:
                raise pickle.UnpicklingError(f"storage {key} claims more bytes than the file has")
            storages[key] = FlatStorage(torch.empty(numel, dtype=kind.dtype))
        if view is None:
            return storages[key]
        if not (type(view) is tuple and len(view) == 3 and all(type(v) is int for v in view[1:])):
            raise pickle.UnpicklingError(f"storage {key}: bad view {brief(view)}")
        _, offset, length = view
        return FlatStorage(storages[key].flat[offset: offset + length])

    unpickler = InertUnpickler(f, storage)
    obj = unpickler.load()
    keys = InertUnpickler(f).load()
    if not isinstance(keys, list) or set(keys) != set(storages):
        raise pickle.UnpicklingError("the storage key list does not match the storages the object uses")
    for key in keys:
        _read_storage(f, storages[key].flat, key)
    return obj, unpickler


def _read_storage(f: BinaryIO, flat: torch.Tensor, key: str) -> None:
    header = f.read(8)
    if len(header) != 8 or struct.unpack("<q", header)[0] != flat.numel():
        raise pickle.UnpicklingError(f"storage {key}: the element count in the file differs from its pickle")
    data = f.read(flat.numel() * flat.element_size())
    if len(data) != flat.numel() * flat.element_size():
        raise pickle.UnpicklingError(f"storage {key} is truncated")
    if data:
        flat.copy_(_flat(data, flat.dtype))
