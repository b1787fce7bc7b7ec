"""A small name -> plugin registry, so adding a handler or an executor is one
module and one registration line, never another branch in an if-chain."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def decorator(cls: type[T]) -> type[T]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = cls()
            return cls

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise LookupError(
                f"no {self.kind} registered as {name!r}; known: {', '.join(sorted(self._items))}"
            ) from None

    def unregister(self, name: str) -> T:
        """Remove a plugin, so a test can put a stand-in in place and take it out again."""
        try:
            return self._items.pop(name)
        except KeyError:
            raise LookupError(f"no {self.kind} registered as {name!r}") from None

    def __iter__(self) -> Iterator[T]:
        return iter(self._items.values())

    def names(self) -> list[str]:
        return sorted(self._items)
