"""Registries: extension points addressed by name, with errors that list what is available.

Third-party packages add entries through the entry-point group ``cgkd.<registry name>``
(for example ``cgkd.architectures``); they are loaded lazily on the first lookup miss.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable, Dict, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the available names."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0])


class Registry(Generic[T]):
    """A name -> object table for one kind of extension (architectures, priors, losses, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@ARCHITECTURES.register("hipnn")``."""

        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=f"cgkd.{self.kind}"):
            if ep.name not in self._items:
                self._items[ep.name] = ep.load()

    def get(self, name: str) -> T:
        if name not in self._items:
            self._load_entry_points()
        if name not in self._items:
            raise UnknownNameError(f"Unknown {self.kind} {name!r}. Available: {', '.join(sorted(self._items)) or 'none'}")
        return self._items[name]

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self.names()
