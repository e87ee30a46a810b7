"""torch.save files read with the inert unpickler, for when ``torch.load(weights_only=True)`` refuses them.

Both of torch's layouts are read: the zip archive (``<root>/data.pkl`` plus one record per storage under
``<root>/data/``) and the legacy stream (magic number, protocol, system info, the object pickle, the storage
keys, then each storage as a little-endian element count and its bytes). Storages are filled from the file
with ordinary tensor constructors; their sizes are checked against the file before anything is allocated.
:func:`precheck` looks at a file before torch or the inert unpickler reads it: zip records that inflate far
beyond their size, and the shape of every pickle (:mod:`moco_bench.core.pickle_scan`).
"""

from __future__ import annotations

import io
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

from moco_bench.core.inert_pickle import MAGIC_NUMBER, InertUnpickler, flat_tensor, read_legacy_stream, storage_pid
from moco_bench.core.pickle_scan import PickleBomb, scan
from moco_bench.core.rebuild import FlatStorage

# torch.save stores its records uncompressed, and trained weights hardly compress: a record that inflates more
# than this is a zip bomb (2 GiB of zeros deflate into 2 MB), refused before anything is decompressed.
MAX_INFLATION = 20


def legacy_prefixes() -> tuple[bytes, ...]:
    """How a legacy torch file starts: the magic number pickled at protocol 2 (torch's default) up to 5."""
    return tuple(pickle.dumps(MAGIC_NUMBER, protocol=p)[:-1] for p in range(2, 6))


def precheck(path: Path, zipped: bool) -> set[str]:
    """Check a torch file before it is unpickled; returns the globals its pickles name.

    Raises:
        PickleBomb: a zip record inflates beyond :data:`MAX_INFLATION`, or a pickle is past the limits of
            :func:`~moco_bench.core.pickle_scan.scan`.
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
            _, kind, key, _, numel = storage_pid(pid, 5)
            if key not in storages:
                record = f"{root}data/{key}"
                if record not in names or archive.getinfo(record).file_size != numel * kind.dtype.itemsize:
                    raise pickle.UnpicklingError(f"storage record {record} is missing or not {numel} elements")
                storages[key] = FlatStorage(flat_tensor(archive.read(record), kind.dtype))
            return storages[key]

        unpickler = InertUnpickler(io.BytesIO(archive.read(data_pkl)), storage)
        return unpickler.load(), unpickler


def read_legacy(path: Path) -> tuple[Any, InertUnpickler]:
    """The object of a legacy (pre-1.6, or ``_use_new_zipfile_serialization=False``) torch file."""
    with open(path, "rb") as f:
        return read_legacy_stream(f, path.stat().st_size)
