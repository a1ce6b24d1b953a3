"""One helper for every registry of named kinds (blocks, data sets, guide sources, built-in guides, latency
runtimes, augmentations, objectives, activations, alignment losses, bridges, norms): a name is registered once,
an unknown name is one line with the valid names and the closest one, and a registry lists itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from ..errors import unknown_name

V = TypeVar("V")


class Registry(dict):
    """A ``dict`` of name -> kind (read as any dict), that refuses to register a name twice."""

    def __init__(self, kind: str, entries: Mapping[str, object] | None = None):
        super().__init__()
        self.kind = kind  # how errors name an entry: "block", "dataset", ...
        for name, value in (entries or {}).items():
            self.add(name, value)

    def add(self, name: str, value: V) -> V:
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self[name] = value
        return value

    def register(self, name: str) -> Callable[[V], V]:
        """A decorator: ``@REGISTRY.register("name")``."""
        return lambda value: self.add(name, value)

    def lookup(self, name: str):
        """The entry ``name``; an unknown one is a one-line :class:`~nas_theseus.errors.UserError` naming the
        valid names and the closest."""
        if name not in self:
            raise unknown_name(self.kind, name, self)
        return self[name]

    def listing(self) -> str:
        return ", ".join(sorted(self))
