"""Named choices, each defined once where it lives: a ``Registry`` maps a name to the function or class
that implements it. Config validation, the CLI's choices and the docs read the names from here, so
adding a sampler (say) is one function and one ``@SAMPLERS.register("name")`` line.
"""
from __future__ import annotations

import re
from typing import Iterator

from ddpmlab.core.utils import DDPMLabError

TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")  # your own code as "package.module:name"


def is_target(name) -> bool:
    """Whether ``name`` names code to import (``package.module:name``, as Hydra's ``_target_``) rather than
    a registered name."""
    return isinstance(name, str) and TARGET.fullmatch(name) is not None


class Registry:
    """An ordered name -> object table for one kind of choice (``kind`` names it in error messages)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, object] = {}

    def register(self, name: str, obj=None, *, replace: bool = False):
        """Register ``obj`` under ``name``; without ``obj``, a decorator. Registering a taken name is an
        error unless ``replace``. A name is an identifier, or the ``package.module:name`` it was imported
        from (``ddpmlab.config.plugins``)."""
        def add(o):
            if not isinstance(name, str) or not (name.isidentifier() or is_target(name)):
                raise DDPMLabError(f"a {self.kind} name must be an identifier, got {name!r}")
            if name in self._items and not replace and self._items[name] is not o:
                raise DDPMLabError(f"{self.kind} {name!r} is already registered")
            self._items[name] = o
            return o

        return add if obj is None else add(obj)

    def get(self, name: str):
        """The object registered as ``name``; an unknown name is a one-line error listing the choices."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise DDPMLabError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self._items)}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def __contains__(self, name) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"
