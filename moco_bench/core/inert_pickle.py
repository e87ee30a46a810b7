"""An unpickler that rebuilds data and never imports or calls what a pickle names.

Training frameworks save their own objects beside the weights (mmengine's ``HistoryBuffer``, OmegaConf
configs, ``pathlib`` paths), and ``torch.load(weights_only=True)`` refuses such a file as a whole. This
unpickler reads it anyway: tensors, storages, numpy arrays, containers and plain values are rebuilt by the
checked functions of :mod:`moco_bench.core.rebuild`; every other global becomes a :class:`Placeholder`
that only records its name. Calling, constructing, filling or setting the state of a placeholder yields or
updates another placeholder; nothing the pickle names is ever imported or called, and a value that is not
a rebuilder is never called at all.

It is the standard library's pure-Python unpickler with every opcode that could reach a callable or a
method of a stack object replaced (GLOBAL, STACK_GLOBAL, INST, OBJ, EXT*, REDUCE, NEWOBJ, NEWOBJ_EX,
BUILD, APPEND(S), SETITEM(S), ADDITEMS, out-of-band buffers); the opcodes kept only push literals and
move values between the stack and the memo (``SAFE_STDLIB_OPCODES``, checked by a test).

Globals that no checkpoint needs and that code-execution payloads use (``os.system``, ``builtins.eval``,
``getattr(x, '__globals__')`` ...) are collected in :attr:`InertUnpickler.hostile`; the caller refuses
such a file, although nothing in it ran.

The legacy torch stream (magic number, protocol, system info, the object pickle, the storage keys, then each
storage's element count and bytes) is read here too (:func:`read_legacy_stream`): a tensor pickled with plain
``pickle`` carries its storage as such a stream in bytes (``torch.storage._load_from_bytes``), which this
unpickler reads with itself.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
import struct
import sys
from typing import Any, BinaryIO, Callable

import torch

from moco_bench.core import rebuild
from moco_bench.core.pickle_scan import scan
from moco_bench.core.rebuild import FlatStorage, StorageKind, brief

# Globals whose only use in a pickle is to run commands or code, read or write files, or load more pickles.
_HOSTILE_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "_posixsubprocess", "sys", "importlib", "runpy", "shutil", "socket",
    "ctypes", "marshal", "pickle", "_pickle", "dill", "cloudpickle", "code", "codeop", "pty", "webbrowser",
    "multiprocessing", "signal", "pdb", "timeit", "asyncio", "io", "_io", "tempfile", "urllib", "http",
    "ftplib", "smtplib", "telnetlib", "commands", "popen2", "ensurepip", "pip", "venv", "site", "shelve"})
_HOSTILE_NAMES = frozenset({
    "builtins.eval", "builtins.exec", "builtins.compile", "builtins.__import__", "builtins.open",
    "builtins.breakpoint", "builtins.input", "builtins.setattr", "builtins.delattr", "builtins.globals",
    "builtins.locals", "builtins.vars", "builtins.exit", "builtins.quit", "builtins.help",
    "operator.attrgetter", "operator.methodcaller", "types.FunctionType", "types.CodeType",
    "types.LambdaType", "types.MethodType", "types.ModuleType", "torch.load", "torch.serialization.load",
    "torch.jit.load", "torch.hub.load", "torch.hub.load_state_dict_from_url", "torch.hub.download_url_to_file",
    "numpy.load", "numpy.testing._private.utils.runstring"})
# Attribute names a getattr chain reaches for on its way to a function that runs code.
_HOSTILE_ATTRS = frozenset({"system", "popen", "eval", "exec", "compile", "execv", "execve", "execl", "spawnv",
                            "check_output", "check_call", "Popen", "getoutput", "getstatusoutput", "loads",
                            "runstring", "open", "import_module"})
_GETATTR = "builtins.getattr"
_SAFE_REFUSAL = (pickle.UnpicklingError, rebuild.RebuildError, TypeError, ValueError, KeyError, IndexError,
                 AttributeError, EOFError, struct.error, UnicodeDecodeError, MemoryError, RecursionError,
                 OverflowError)


class Placeholder:
    """Stands for an object of a class the pickle named: its name and what the pickle passed, for messages.

    Attributes:
        name: the global it comes from (``mmengine.logging.history_buffer.HistoryBuffer``).
        is_global: the global itself (a class or function), not something made from it.
        args, state, items: what REDUCE/NEWOBJ, BUILD and APPEND/SETITEM gave it, kept as data.
        reason: why a rebuilder declined to build it, when it stands for one.
    """

    __slots__ = ("name", "is_global", "args", "state", "items", "reason")

    def __init__(self, name: str, is_global: bool = False, args: tuple = (), reason: str = ""):
        self.name, self.is_global, self.args, self.reason = name, is_global, args, reason
        self.state, self.items = None, []

    def __repr__(self) -> str:
        return f"<placeholder {self.name}{'' if self.is_global else ' object'}>"


def hostile_global(module: str, name: str) -> bool:
    """A global that only code-execution payloads name (dunder attributes included)."""
    parts = name.split(".")
    if any(p.startswith("__") and p.endswith("__") for p in parts) and module not in ("copyreg", "copy_reg"):
        return True
    return module.split(".")[0] in _HOSTILE_MODULES or f"{module}.{name}" in _HOSTILE_NAMES


# id -> (rebuilder, the global it stands for); looked up by identity, so no value of the pickle is hashed.
MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER: the first pickle of a legacy file
LEGACY_PROTOCOL = 1001
_LOAD_FROM_BYTES = ("torch.storage", "_load_from_bytes")
_REBUILDERS_BY_ID = {id(fn): (fn, f"{module}.{name}") for (module, name), fn in rebuild.REBUILDERS.items()}


class InertUnpickler(pickle._Unpickler):
    """Reads one pickle; ``persistent_load`` resolves storage records through ``storage`` (torch files).

    After :meth:`load`, ``placeholders`` holds every global rebuilt as a placeholder and ``hostile`` the
    globals (and ``getattr`` names) that mark a code-execution payload.
    """

    def __init__(self, file: io.BufferedIOBase, storage: Callable[[tuple], Any] | None = None):
        super().__init__(file, encoding="utf-8")
        self._source = file
        self._storage = storage
        self._globals: dict[str, Placeholder] = {}
        self.placeholders: set[str] = set()
        self.hostile: list[str] = []

    def load(self) -> Any:
        """The object, after :func:`~moco_bench.core.pickle_scan.scan` has checked the pickle's shape."""
        start = self._source.tell()
        scan(self._source)
        self._source.seek(start)
        try:
            return super().load()
        except pickle.UnpicklingError:
            raise
        except _SAFE_REFUSAL as e:
            raise pickle.UnpicklingError(f"{type(e).__name__}: {e}") from None

    def persistent_load(self, pid: Any) -> Any:
        if self._storage is None:
            raise pickle.UnpicklingError("a plain pickle has no storage records (persistent id found)")
        return self._storage(pid)

    def find_class(self, module: str, name: str) -> Any:  # never imports: a table lookup or a placeholder
        if not isinstance(module, str) or not isinstance(name, str):
            raise pickle.UnpicklingError("a global's module and name must be strings")
        if self.proto < 3:
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) == _LOAD_FROM_BYTES:
            return storage_from_bytes
        known = rebuild.REBUILDERS.get((module, name), rebuild.VALUES.get((module, name)))
        if known is not None:
            return known
        full = f"{module}.{name}"
        if hostile_global(module, name) and full not in self.hostile:
            self.hostile.append(full)
        self.placeholders.add(full)
        return self._globals.setdefault(full, Placeholder(full, is_global=True))

    def _call(self, func: Any, args: Any) -> Any:
        """REDUCE, NEWOBJ, INST, OBJ: a rebuilder runs, a placeholder yields a placeholder, nothing else is called."""
        if type(args) is not tuple:
            raise pickle.UnpicklingError(f"arguments must be a tuple, got {type(args).__name__}")
        if isinstance(func, Placeholder):
            if func.name == _GETATTR and len(args) == 2 and isinstance(args[1], str):
                found = f"{_GETATTR}(..., {args[1]!r})"
                if (hostile_global("builtins", args[1]) or args[1] in _HOSTILE_ATTRS) and found not in self.hostile:
                    self.hostile.append(found)
            return Placeholder(func.name, args=args)
        fn, name = _REBUILDERS_BY_ID.get(id(func), (None, "")) if func is not storage_from_bytes else (
            storage_from_bytes, ".".join(_LOAD_FROM_BYTES))
        if fn is not func:
            raise pickle.UnpicklingError(f"the pickle calls a {type(func).__name__}, which is not a rebuilder")
        try:
            return fn(*args)
        except (rebuild.RebuildError, TypeError) as e:  # not plain data: kept as a placeholder saying why
            self.placeholders.add(name)
            return Placeholder(name, args=args, reason=str(e))

    def load_global(self):
        module = self.readline()[:-1].decode("utf-8")
        name = self.readline()[:-1].decode("utf-8")
        self.append(self.find_class(module, name))

    def load_stack_global(self):
        name = self.stack.pop()
        module = self.stack.pop()
        self.append(self.find_class(module, name))

    def load_inst(self):
        module = self.readline()[:-1].decode("ascii")
        name = self.readline()[:-1].decode("ascii")
        cls = self.find_class(module, name)
        self.append(self._call(cls, tuple(self.pop_mark())))

    def load_obj(self):
        args = self.pop_mark()
        cls = args.pop(0)
        self.append(self._call(cls, tuple(args)))

    def load_ext(self):
        raise pickle.UnpicklingError("extension registry codes (EXT1/2/4) are not accepted")

    def load_buffer(self):
        raise pickle.UnpicklingError("out-of-band buffers are not accepted")

    def load_reduce(self):
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    def load_newobj(self):
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        if kwargs and not isinstance(self.stack[-1], Placeholder):
            raise pickle.UnpicklingError("keyword arguments are accepted only for placeholders")
        self.stack[-1] = self._call(self.stack[-1], args)

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, Placeholder):
            inst.state = state
            return
        try:
            built = rebuild.build(inst, state)
        except rebuild.RebuildError as e:  # not plain data (a string or structured array): a placeholder
            name = f"{type(inst).__module__}.{type(inst).__qualname__}"
            self.placeholders.add(name)
            self._replace(inst, Placeholder(name, reason=str(e)))
            return
        if not built:
            raise pickle.UnpicklingError(f"cannot set the state of a {type(inst).__name__}")

    def _replace(self, old: Any, new: Placeholder) -> None:
        """Put ``new`` wherever the stack and the memo hold ``old`` (an object BUILD could not complete)."""
        self.stack[-1] = new
        for index, value in list(self.memo.items()):
            if value is old:
                self.memo[index] = new

    def _fill(self, kind: type, items: list, add: Callable[[Any, list], None]) -> None:
        target = self.stack[-1]
        if isinstance(target, Placeholder):
            target.items.extend(items)
        elif type(target) in kind:
            add(target, items)
        else:
            raise pickle.UnpicklingError(f"cannot add items to a {type(target).__name__}")

    def load_append(self):
        self._fill((list,), [self.stack.pop()], list.extend)

    def load_appends(self):
        self._fill((list,), self.pop_mark(), list.extend)

    def load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        self._fill((dict, collections.OrderedDict), [key, value], _set_pairs)

    def load_setitems(self):
        self._fill((dict, collections.OrderedDict), self.pop_mark(), _set_pairs)

    def load_additems(self):
        self._fill((set,), self.pop_mark(), set.update)

    _REPLACED = {
        pickle.GLOBAL: load_global, pickle.STACK_GLOBAL: load_stack_global, pickle.INST: load_inst,
        pickle.OBJ: load_obj, pickle.EXT1: load_ext, pickle.EXT2: load_ext, pickle.EXT4: load_ext,
        pickle.REDUCE: load_reduce, pickle.NEWOBJ: load_newobj, pickle.NEWOBJ_EX: load_newobj_ex,
        pickle.BUILD: load_build, pickle.APPEND: load_append, pickle.APPENDS: load_appends,
        pickle.SETITEM: load_setitem, pickle.SETITEMS: load_setitems, pickle.ADDITEMS: load_additems,
        pickle.NEXT_BUFFER: load_buffer, pickle.READONLY_BUFFER: load_buffer,
    }
    dispatch = {**pickle._Unpickler.dispatch, **{op[0]: fn for op, fn in _REPLACED.items()}}


def _set_pairs(target: dict, items: list) -> None:
    if len(items) % 2:
        raise pickle.UnpicklingError("SETITEMS needs key/value pairs")
    for i in range(0, len(items), 2):
        target[items[i]] = items[i + 1]


# The standard library's handlers kept as they are: each only reads literals or moves stack/memo values.
SAFE_STDLIB_OPCODES = frozenset(
    op for op, fn in InertUnpickler.dispatch.items() if fn is pickle._Unpickler.dispatch.get(op))


def inert_loads(data: bytes) -> tuple[Any, InertUnpickler]:
    """Unpickle ``data`` (a plain pickle) inertly; returns the object and the unpickler's findings."""
    unpickler = InertUnpickler(io.BytesIO(data))
    return unpickler.load(), unpickler


def storage_pid(pid: Any, length: int) -> tuple:
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


def read_legacy_stream(f: BinaryIO, size: int) -> tuple[Any, InertUnpickler]:
    """A legacy torch stream of ``size`` bytes (also what a plainly pickled tensor's storage holds)."""
    if InertUnpickler(f).load() != MAGIC_NUMBER or InertUnpickler(f).load() != LEGACY_PROTOCOL:
        raise pickle.UnpicklingError("not a legacy torch file (magic number or protocol differs)")
    info = InertUnpickler(f).load()
    if not isinstance(info, dict) or info.get("little_endian") is not (sys.byteorder == "little"):
        raise pickle.UnpicklingError("storages were written on a machine of the other byte order")
    storages: dict[str, FlatStorage] = {}

    def storage(pid: Any) -> FlatStorage:
        _, kind, key, _, numel, view = storage_pid(pid, 6)
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
        flat.copy_(flat_tensor(data, flat.dtype))


def flat_tensor(data: bytes, dtype: torch.dtype) -> torch.Tensor:
    if not data:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype)


def storage_from_bytes(data):
    """``torch.storage._load_from_bytes``: a tensor pickled with plain ``pickle`` keeps its storage as a
    legacy torch stream in bytes (torch would ``torch.load`` it unrestricted); read it inertly instead."""
    if not isinstance(data, bytes):
        raise rebuild.RebuildError("_load_from_bytes takes bytes")
    try:
        obj, unpickler = read_legacy_stream(io.BytesIO(data), len(data))
    except pickle.UnpicklingError as e:
        raise rebuild.RebuildError(f"an embedded storage is unreadable: {e}") from None
    if not isinstance(obj, FlatStorage) or unpickler.placeholders:
        raise rebuild.RebuildError("an embedded storage holds something other than a storage")
    return obj
