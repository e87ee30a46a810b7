"""Crafted checkpoints (issue 26) end in one line naming the file and what is wrong, exit status 2, nothing
written: nested tuple keys that crashed the process, containers shared over and over that hung it or took its
memory, a zip bomb, a forged numpy dtype state and a forged safetensors header. Each file is built here, is
small, and is converted by ``moco-bench convert`` in a child process under a memory cap and a timeout, so
that a regression fails the test instead of taking the machine."""

from __future__ import annotations

import collections
import io
import os
import pickle
import resource
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from checkpoint_builders import backbone_state

REPO = Path(__file__).resolve().parents[1]
MEMORY_CAP = 5 * 2 ** 30  # address space: importing torch reserves about 3.5 GiB of it
TIMEOUT_S = 90  # imports take a few seconds on a busy machine; a hang or a crash ends the test


def _convert_capped(path: Path, out: Path) -> subprocess.CompletedProcess:
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "moco_bench", "convert", str(path), "-o", str(out)],
                          capture_output=True, text=True, timeout=TIMEOUT_S, preexec_fn=cap, env=env)


def _refused(path: Path, tmp_path: Path, *what: str) -> str:
    """Convert ``path`` capped; assert rc 2, one line naming the file and saying each of ``what``, no output."""
    out = tmp_path / "out"
    proc = _convert_capped(path, out)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, f"rc {proc.returncode}: {proc.stderr[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith(f"moco-bench: error: {path}: "), proc.stderr[-2000:]
    for text in what:
        assert text in lines[0], lines[0]
    assert not out.exists() and proc.stdout == ""
    return lines[0]


def _torch_zip(path: Path, data_pkl: bytes) -> Path:
    """A torch zip file (what torch.save writes for a small dict) whose data.pkl is ``data_pkl``."""
    buffer = io.BytesIO()
    torch.save({"x": 1}, buffer)
    source = zipfile.ZipFile(buffer)
    with zipfile.ZipFile(path, "w") as archive:
        for name in source.namelist():
            archive.writestr(name, data_pkl if name.endswith("/data.pkl") else source.read(name))
    return path


def _deep_tuple_key(depth: int) -> bytes:
    """{((...(0,)...),): 1}: the key nested ``depth`` deep, written with TUPLE1 (300 kB for 300,000)."""
    return b"\x80\x02}K\x00" + b"\x85" * depth + b"K\x01s."


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_a_tuple_key_nested_300000_deep_is_refused_not_a_crash(suffix, tmp_path):
    """Issue 26 fail 1: torch's unpickler and the inert one hashed the key and died (SIGSEGV, rc 139)."""
    path = tmp_path / f"deep{suffix}"
    if suffix == ".pkl":
        path.write_bytes(_deep_tuple_key(300_000))
    else:
        _torch_zip(path, _deep_tuple_key(300_000))
    _refused(path, tmp_path, "refused: tuples nested more than 100 deep", "nothing in it was built or run")


def _laughs(levels: int = 40, kind=dict):
    node = kind()
    for _ in range(levels):
        node = {"a": node, "b": node} if kind is dict else kind((node, node))
    return node


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_mappings_that_hold_the_level_below_twice_40_deep_are_refused(suffix, tmp_path):
    """Issue 26 fail 2: 2^40 entries for the walks of formats.py (a MemoryError after 30 s, or a hang)."""
    path = tmp_path / f"laughs{suffix}"
    if suffix == ".pkl":
        path.write_bytes(pickle.dumps({"state_dict": _laughs()}, protocol=2))
    else:
        torch.save({"state_dict": _laughs()}, path)
    assert path.stat().st_size < 3000
    _refused(path, tmp_path, "refused: walking its nested mappings visits more than 200,000 entries",
             "billion laughs")


def test_lists_that_hold_the_level_below_twice_40_deep_are_walked_once(tmp_path):
    """Issue 26 fail 2, the .pkl of lists: loading.py's numpy-to-tensor walk took 2^40 steps."""
    path = tmp_path / "laughs.pkl"
    path.write_bytes(pickle.dumps({"model": {"stem.conv1.weight": np.zeros(1)}, "x": _laughs(kind=list)}, 2))
    _refused(path, tmp_path, "not a ResNet")


def test_tuples_that_hold_the_level_below_twice_are_refused_before_hashing(tmp_path):
    """The tuple form of fail 2: one hash of the key visits 2^40 tuples (inside either unpickler)."""
    key = pickle.dumps(_laughs(kind=tuple), protocol=2)[2:-1]  # pickling memoizes by identity: no hash
    path = tmp_path / "laughs.pkl"
    path.write_bytes(b"\x80\x02}" + key + b"K\x01s.")
    _refused(path, tmp_path, "refused: tuples that hold the same tuples over and over", "billion laughs")


def test_a_torch_size_of_a_list_dag_is_refused_without_printing_it(tmp_path):
    """Issue 26 fail 2, the 793 B file: rebuild.py formatted the whole argument of torch.Size for its message."""
    dag = pickle.dumps(_laughs(kind=list), protocol=2)[2:-1]  # the list, without PROTO and STOP
    weights = pickle.dumps(backbone_state(torchvision.models.resnet18()), protocol=2)
    body = weights[:-2]  # the state dict without its closing SETITEMS and STOP
    assert weights[-2:] == b"u." and body[-1:] != b"u"
    path = tmp_path / "size.pkl"
    path.write_bytes(body + b"X\x04\x00\x00\x00sizectorch\nSize\n" + dag + b"\x85Ru.")
    _refused(path, tmp_path, "torch.Size must be a tuple of integers, got [[[")


def test_a_zip_bomb_is_refused_before_anything_is_decompressed(tmp_path):
    """Issue 26 weak 1: a 260 kB .pth whose storage record deflates 256 MiB of zeros (torch.load inflated it
    whole, then said 'not a ResNet')."""
    numel = 2 ** 26
    buffer = io.BytesIO()
    with torch.serialization.skip_data():  # torch's own data.pkl for a 256 MiB tensor, without its bytes
        torch.save({"x": torch.empty(numel)}, buffer)
    source = zipfile.ZipFile(buffer)
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", compresslevel=9) as archive:
        for name in source.namelist():
            if not name.endswith("/data/0"):
                archive.writestr(name, source.read(name))
                continue
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as record:
                for _ in range(16):
                    record.write(bytes(numel * 4 // 16))
    assert path.stat().st_size < 2 ** 20
    _refused(path, tmp_path, "zip record archive/data/0 inflates", "into 256.0 MiB", "a zip bomb",
             "nothing was decompressed")


class _Reduce:
    """Pickles as ``fn(*args)`` followed by BUILD with ``state``."""

    def __init__(self, fn, args, state):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return self.fn, self.args, self.state


def _forged_array() -> _Reduce:
    """A float64 array whose dtype state claims numpy's object flag: numpy then treats its bytes as pointers."""
    dtype = _Reduce(np.dtype, ("f8", False, True), (3, "<", None, None, None, -1, -1, 1))
    return _Reduce(np.ndarray.__reduce__(np.zeros(1))[0], (np.ndarray, (0,), b"b"),
                   (1, (2,), dtype, False, bytes(16)))


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_a_forged_numpy_dtype_state_is_checked_before_it_is_applied(suffix, tmp_path):
    """Issue 26 weak 2: torch's unpickler applied the state (RuntimeError from numpy, a traceback, rc 1); the
    inert one applied it, then checked it."""
    state = {**backbone_state(torchvision.models.resnet18()), "conv1.weight": _forged_array()}
    path = tmp_path / f"forged{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": state}, path)
    else:
        path.write_bytes(pickle.dumps(state, protocol=2))
    _refused(path, tmp_path, "the weights are not plain tensors: conv1.weight", "numpy.ndarray",
             "is not a plain numeric dtype's (only the byte order may differ)")
    assert np.dtype("f8").flags == 0


def test_a_safetensors_header_longer_than_the_file_is_named(tmp_path):
    """Issue 26 weak 3: a header length of 2^60 read as 'not a PyTorch checkpoint (KeyError: 0)'."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 2 ** 60) + b'{"__metadata__": {}}')
    _refused(path, tmp_path, "a safetensors file whose header length (1,152,921,504,606,846,976 bytes) is "
                             "larger than the file (28 bytes)")


def test_honest_files_pass_the_checks_with_their_sharing(tmp_path):
    """What the limits allow: a model dict shared by two containers, OrderedDict metadata, numpy meters."""
    state = collections.OrderedDict(backbone_state(torchvision.models.resnet18()))
    path = tmp_path / "shared.pth"
    torch.save({"model": state, "model_ema": state, "epoch": 3, "args": None, "best": np.float64(1.5),
                "hist": [np.arange(3)] * 100}, path)
    proc = _convert_capped(path, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "format torchvision-reference" in proc.stdout and "other copy: ema model_ema.*" in proc.stdout
