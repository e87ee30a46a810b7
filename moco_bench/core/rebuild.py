"""The only things the inert unpickler builds for real: tensors, storages, numpy arrays and plain values.

Each rebuilder is a function of this module, not the library function the pickle names: it checks the
types of its arguments and builds the value with ordinary constructors, so a crafted pickle can at most
make one of them raise. Objects that the pickle names but that are values rather than callables (dtypes,
the ndarray class, storage classes) are listed in :data:`VALUES`; the unpickler never calls them.
"""

from __future__ import annotations

import collections
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch


class RebuildError(ValueError):
    """A rebuilder got arguments that no honest pickle of that object contains."""


_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxother = 2, 40, 40
_BRIEF.maxlist = _BRIEF.maxtuple = _BRIEF.maxdict = _BRIEF.maxset = _BRIEF.maxfrozenset = 4


def brief(value) -> str:
    """A value from a pickle, for a message: a few levels and items only, so that a container shared over and
    over (a list of two references to the list below, 40 deep) costs no more to print than a small one."""
    return _BRIEF.repr(value)


@dataclass(frozen=True)
class StorageKind:
    """``torch.FloatStorage`` and friends, as named in a persistent id: only their dtype matters."""

    dtype: torch.dtype


class FlatStorage:
    """One storage record of a torch file, as a flat tensor of its dtype (filled by the file reader)."""

    def __init__(self, flat: torch.Tensor):
        self.flat = flat


# torch.<Kind>Storage -> dtype, as torch.save names storages (torch.storage's map, written out: reading the
# legacy classes' dtype attribute warns that TypedStorage is deprecated).
_LEGACY_STORAGES = {"Double": torch.float64, "Float": torch.float32, "Half": torch.float16, "BFloat16": torch.bfloat16,
                    "Long": torch.int64, "Int": torch.int32, "Short": torch.int16, "Char": torch.int8,
                    "Byte": torch.uint8, "Bool": torch.bool, "ComplexDouble": torch.complex128,
                    "ComplexFloat": torch.complex64}
_NUMPY_CORES = ("numpy.core", "numpy._core")


def _ints(value, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(type(v) is int for v in value):
        raise RebuildError(f"{what} must be a tuple of integers, got {brief(value)}")
    return tuple(value)


def _empty_hooks(hooks) -> None:
    if hooks is not None and (not isinstance(hooks, Mapping) or hooks):
        raise RebuildError("a tensor with backward hooks is not plain data")


def tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    """``torch._utils._rebuild_tensor_v2``: a strided view of a storage record (bounds checked by torch)."""
    if not isinstance(storage, FlatStorage):
        raise RebuildError(f"a tensor's storage must come from the file's storage records, got {type(storage)}")
    if type(offset) is not int or type(requires_grad) is not bool:
        raise RebuildError("a tensor's offset must be an integer and requires_grad a bool")
    _empty_hooks(hooks)
    if metadata:
        raise RebuildError("a tensor with extra metadata (conjugate or negative bit) is not a plain weight")
    try:
        return storage.flat.as_strided(_ints(size, "size"), _ints(stride, "stride"), offset)
    except RuntimeError as e:
        raise RebuildError(f"a tensor does not fit its storage: {e}") from None


def tensor_v1(storage, offset, size, stride):
    """``torch._utils._rebuild_tensor``, written by old torch versions."""
    return tensor_v2(storage, offset, size, stride)


def parameter(data, requires_grad=False, hooks=None, state=None):
    """``torch._utils._rebuild_parameter[_with_state]``: the parameter's tensor (weights need nothing more)."""
    if not isinstance(data, torch.Tensor) or state:
        raise RebuildError("a parameter must hold a plain tensor and no extra state")
    _empty_hooks(hooks)
    return data


def from_type_v2(func, new_type, args, state):
    """``torch._tensor._rebuild_from_type_v2``: only plain Tensor and Parameter, built by a rebuilder here."""
    if not any(func is f for f in (tensor_v2, tensor_v1, parameter)) or not isinstance(args, tuple):
        raise RebuildError("a tensor subclass is rebuilt only from this module's tensor rebuilders")
    if not (new_type is torch.Tensor or new_type is torch.nn.Parameter) or state:
        raise RebuildError(f"{new_type!r} is a tensor subclass or carries state; not a plain tensor")
    return func(*args)


def ordered_dict(items=()):
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, (list, tuple)) and len(i) == 2 for i in items):
        raise RebuildError("OrderedDict takes a list of pairs")
    return collections.OrderedDict(items)


def size(dims=()):
    return torch.Size(_ints(dims, "torch.Size"))


def device(kind, index=None):
    if not isinstance(kind, str) or (index is not None and type(index) is not int):
        raise RebuildError("torch.device takes a string and an optional index")
    return torch.device(kind) if index is None else torch.device(kind, index)


def latin1(text, encoding="latin1"):
    """``_codecs.encode(str, "latin1")``: how protocol 2 writes bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RebuildError("_codecs.encode is accepted only for str -> latin1 bytes")
    return text.encode("latin-1")


def plain_set(items=()):
    if not isinstance(items, (list, tuple)):
        raise RebuildError("set takes a list")
    return set(items)


# Numeric numpy kinds only: bool, integers, floats, complex. Object, void (structured) and string dtypes are
# refused, because numpy's dtype __setstate__ accepts fields it does not flag, so a crafted void dtype can
# hide object pointers in raw bytes.
_NUMERIC_KINDS = "biufc"


def _numeric(dtype, what: str) -> np.dtype:
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS or dtype.hasobject or dtype.names:
        refused = getattr(dtype, "reason", "")  # a dtype the unpickler already kept as a placeholder says why
        raise RebuildError(f"{what}: {refused}" if refused else
                           f"{what}: only numeric numpy dtypes are rebuilt, got {brief(dtype)}")
    return dtype


def np_reconstruct(cls, shape, typecode):
    """First half of a pickled ndarray; BUILD then sets its data (see :func:`build`)."""
    if cls is not np.ndarray or not isinstance(typecode, bytes) or _ints(shape, "shape") != (0,):
        raise RebuildError("numpy _reconstruct is accepted only as numpy writes it: (ndarray, (0,), b'b')")
    return np.ndarray.__new__(np.ndarray, (0,), typecode)


def np_dtype(code, align=False, copy=False):
    """A new numeric dtype (never numpy's shared instance, which BUILD would then modify)."""
    if not isinstance(code, str) or type(align) is not bool or type(copy) is not bool:
        raise RebuildError("numpy.dtype takes a type code string")
    try:
        return _numeric(np.dtype(code, align=align, copy=True), "numpy.dtype")
    except TypeError:
        raise RebuildError(f"numpy.dtype: unknown type code {brief(code)}") from None


def np_scalar(dtype, data):
    if not isinstance(data, bytes):
        raise RebuildError("numpy scalar takes a numeric dtype and bytes")
    return np.frombuffer(data, dtype=_numeric(dtype, "numpy scalar"), count=1)[0]


def np_frombuffer(data, dtype, shape, order="C", axis_order=None):
    """Protocol 5 ndarrays: C or F order, or (numpy 2.3+, an array neither C nor F contiguous, such as a
    channels_last weight) ``K`` with the axis order that restores the array from its memory order."""
    if not isinstance(data, (bytes, bytearray)) or order not in ("C", "F", "K"):
        raise RebuildError("numpy _frombuffer takes bytes and order C, F or K")
    flat = np.frombuffer(bytes(data), dtype=_numeric(dtype, "numpy _frombuffer"))
    shape = _ints(shape, "shape")
    if order != "K":
        return flat.reshape(shape, order=order)
    axes = _ints(axis_order, "axis_order")
    if sorted(axes) != list(range(len(shape))):
        raise RebuildError(f"numpy _frombuffer: axis_order {brief(axes)} is not a permutation of the axes")
    return flat.reshape(shape, order="C").transpose(axes)


def build(obj, state) -> bool:
    """BUILD on a real object: numeric numpy arrays and dtypes take their state; an OrderedDict's attributes
    (the ``_metadata`` of a state dict) are not needed and left out. Returns False for any other object."""
    if type(obj) is np.ndarray:
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[4], bytes)):
            raise RebuildError("only numeric numpy arrays with their data as bytes are rebuilt")
        _numeric(state[2], "numpy array")
        obj.__setstate__(state)
        return True
    if isinstance(obj, np.dtype):  # numpy 2: an instance of numpy.dtypes.Float64DType ...
        _check_dtype_state(obj, state)
        obj.__setstate__(state)
        return True
    return type(obj) is collections.OrderedDict


def _check_dtype_state(dtype: np.dtype, state) -> None:
    """A numeric dtype's state may differ from its own only in byte order: its size, alignment and flags are
    numpy's to know (flags that claim object references make numpy treat raw bytes as pointers), so they are
    checked before anything is applied."""
    own = dtype.__reduce__()[2]  # (3, byte order, subarray, names, fields, elsize, alignment, flags)
    orders = ("|",) if own[1] == "|" else ("<", ">", "=")
    if not (isinstance(state, tuple) and len(state) == len(own) and state[0] == own[0] and state[1] in orders
            and state[2:] == own[2:]):
        raise RebuildError(f"a numpy {dtype} dtype whose state {brief(state)} is not a plain numeric dtype's "
                           f"(only the byte order may differ)")


REBUILDERS = {
    ("torch._utils", "_rebuild_tensor_v2"): tensor_v2,
    ("torch._utils", "_rebuild_tensor"): tensor_v1,
    ("torch._utils", "_rebuild_parameter"): parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): from_type_v2,
    ("collections", "OrderedDict"): ordered_dict,
    ("torch", "Size"): size,
    ("torch", "device"): device,
    ("_codecs", "encode"): latin1,
    ("builtins", "set"): plain_set,
    ("numpy", "dtype"): np_dtype,
    **{(f"{core}.multiarray", "_reconstruct"): np_reconstruct for core in _NUMPY_CORES},
    **{(f"{core}.multiarray", "scalar"): np_scalar for core in _NUMPY_CORES},
    **{(f"{core}.numeric", "_frombuffer"): np_frombuffer for core in _NUMPY_CORES},
}
VALUES = {
    ("numpy", "ndarray"): np.ndarray,
    ("torch", "Tensor"): torch.Tensor,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch", "UntypedStorage"): StorageKind(torch.uint8),
    **{("torch", f"{kind}Storage"): StorageKind(dtype) for kind, dtype in _LEGACY_STORAGES.items()},
    **{("torch", str(v).split(".", 1)[1]): v for v in vars(torch).values() if isinstance(v, torch.dtype)},
}
