"""A small name -> callable registry, one per kind of extension (evaluators, dataset readers, formats)."""

from __future__ import annotations

from typing import Callable, Dict, Iterator, TypeVar

from moco_bench.core.errors import MocoBenchError

F = TypeVar("F", bound=Callable)


class Registry:
    """Maps names to callables; the contract of the callables is documented where the registry is created.

    Registering a name twice is a programming error (``ValueError``); asking for an unknown name is a user
    error that lists the known names.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def decorator(fn: F) -> F:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = fn
            return fn

        return decorator

    def get(self, name: str) -> Callable:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise MocoBenchError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
