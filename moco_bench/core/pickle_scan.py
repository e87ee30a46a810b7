"""One pass over a pickle's opcodes before any unpickler builds it, for what building it would do to the process.

Unpicklers build what a pickle describes, and three descriptions defeat them: a tuple nested 300,000 deep as
a dict key (hashing it recurses in C until the process dies), tuples that reference the tuple below twice, 40
deep (one hash visits 2^40 of them), and a length field larger than the file (read, and so allocated, before
it fails). Tuples cannot change once built, so the pass follows each one exactly: its nesting depth and how
many objects a hash or repr of it visits. Nothing is built; the pass also lists the globals the pickle names,
so that a file can be refused for what it is (a sharded DTensor state dict) before torch tries to rebuild it.
Mutable containers shared over and over (a dict "billion laughs") are bounded where they are walked
(:func:`moco_bench.convert.formats.flatten`).
"""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
from typing import BinaryIO

MAX_TUPLE_DEPTH = 100  # honest checkpoints nest tuples a few levels deep (sizes, strides, betas)
MAX_TUPLE_VISITS = 100_000  # objects one hash of a tuple may visit beyond the objects the pickle holds
_SHARING = 8  # ... and beyond this many times the objects pushed so far (a tuple of shared tuples)
_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}


class PickleBomb(pickle.UnpicklingError):
    """A file built to crash, hang or exhaust what reads it: a pickle past the limits here, or a zip record
    that inflates a thousandfold."""


class _Tuple:
    __slots__ = ("depth", "visits")

    def __init__(self, items: list) -> None:
        inner = [i for i in items if isinstance(i, _Tuple)]
        self.depth = 1 + max((i.depth for i in inner), default=0)
        self.visits = 1 + len(items) - len(inner) + sum(i.visits for i in inner)


class _Bounded:
    """The stream as pickletools reads it, refusing a read longer than what is left of it."""

    def __init__(self, f: BinaryIO, left: int) -> None:
        self.f, self.left = f, left

    def read(self, n: int) -> bytes:
        if n > self.left:  # never read (and so allocate) a length the file cannot hold
            raise pickle.UnpicklingError(f"truncated or forged: an opcode needs {n:,} bytes where {self.left:,} "
                                         f"are left")
        data = self.f.read(n)
        self.left -= len(data)
        return data

    def readline(self) -> bytes:
        line = self.f.readline(self.left)
        self.left -= len(line)
        return line

    def tell(self) -> int:
        return self.f.tell()


class _Machine:
    """The unpickler's stack, marks and memo, holding for each object only what the limits need: a
    :class:`_Tuple`, a string's text (STACK_GLOBAL takes its names from the stack), or None."""

    def __init__(self) -> None:
        self.stack: list = []
        self.marks: list[int] = []
        self.memo: dict = {}
        self.globals: set[str] = set()
        self.pushed = 0

    def push(self, value) -> None:
        self.stack.append(value)
        self.pushed += 1

    def pop(self, n: int = 1) -> list:
        keep = len(self.stack) - n
        if keep < (self.marks[-1] if self.marks else 0):
            raise pickle.UnpicklingError("an opcode pops more than the stack holds")
        items, self.stack[keep:] = self.stack[keep:], []
        return items

    def pop_mark(self) -> list:
        if not self.marks:
            raise pickle.UnpicklingError("an opcode needs a MARK that is not there")
        start = self.marks.pop()
        items, self.stack[start:] = self.stack[start:], []
        return items

    def tuple(self, items: list) -> None:
        made = _Tuple(items)
        if made.depth > MAX_TUPLE_DEPTH:
            raise PickleBomb(f"tuples nested more than {MAX_TUPLE_DEPTH} deep (hashing or printing them would "
                             f"overflow the stack)")
        if made.visits > MAX_TUPLE_VISITS and made.visits > _SHARING * self.pushed:
            raise PickleBomb(f"tuples that hold the same tuples over and over: one of them expands to more than "
                             f"{MAX_TUPLE_VISITS:,} objects from {self.pushed:,} in the pickle (a 'billion laughs')")
        self.push(made)

    def step(self, op: pickletools.OpcodeInfo, arg) -> None:
        name = op.name
        if name in _FIXED_POPS:  # ops that pop a fixed number of objects and push a new one
            self.pop(_FIXED_POPS[name])
            self.push(None)
        elif name in _GROW_POPS:  # ops that add what they pop to the object below them, which stays
            self.pop(_GROW_POPS[name])
        elif name in ("APPENDS", "SETITEMS", "ADDITEMS", "POP_MARK"):
            self.pop_mark()
        elif name in ("LIST", "DICT", "FROZENSET", "OBJ"):
            self.pop_mark()
            self.push(None)
        elif name == "TUPLE":
            self.tuple(self.pop_mark())
        elif name in _TUPLE_SIZES:
            self.tuple(self.pop(_TUPLE_SIZES[name]))
        else:
            self._other(name, op, arg)

    def _other(self, name: str, op: pickletools.OpcodeInfo, arg) -> None:
        if name == "MARK":
            self.marks.append(len(self.stack))
        elif name == "POP" and len(self.stack) > (self.marks[-1] if self.marks else 0):
            self.pop()
        elif name == "POP":  # nothing above the mark: the unpickler pops the mark
            self.pop_mark()
        elif name == "DUP":
            self.push(self.stack[-1])
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            self.memo[len(self.memo) if name == "MEMOIZE" else arg] = self.stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            self.push(self.memo[arg])
        elif name in ("GLOBAL", "INST"):
            self.globals.add(arg.replace(" ", "."))
            if name == "INST":
                self.pop_mark()
            self.push(None)
        elif name == "STACK_GLOBAL":
            module, qualname = self.pop(2)
            self.globals.add(f"{module}.{qualname}" if isinstance(module, str) and isinstance(qualname, str)
                             else "(a global named by computed strings)")
            self.push(None)
        elif name in ("PROTO", "FRAME", "READONLY_BUFFER", "STOP"):
            pass
        elif not op.stack_before and len(op.stack_after) == 1:  # literals, EMPTY_*, PERSID, EXT*, NEXT_BUFFER
            self.push(arg[:200] if name in _STRINGS and isinstance(arg, str) else None)
        else:
            raise pickle.UnpicklingError(f"opcode {name} is not understood")


_FIXED_POPS = {"REDUCE": 2, "NEWOBJ": 2, "NEWOBJ_EX": 3, "BINPERSID": 1}
_GROW_POPS = {"APPEND": 1, "SETITEM": 2, "BUILD": 1}
_TUPLE_SIZES = {"EMPTY_TUPLE": 0, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}


def scan(f: BinaryIO) -> set[str]:
    """Check the pickle that starts at ``f``'s position; returns the globals it names, ``f`` just past its STOP.

    Raises:
        PickleBomb: a limit above is passed, or a length is larger than the rest of the file.
        pickle.UnpicklingError: not a well-formed pickle.
    """
    start = f.tell()
    end = f.seek(0, io.SEEK_END)
    f.seek(start)
    machine = _Machine()
    try:
        for op, arg, _ in pickletools.genops(_Bounded(f, end - start)):
            machine.step(op, arg)
    except pickle.UnpicklingError:
        raise
    except (ValueError, KeyError, IndexError, UnicodeDecodeError, struct.error, OverflowError) as e:
        raise pickle.UnpicklingError(f"not a well-formed pickle ({type(e).__name__}: {e})") from None
    return machine.globals
