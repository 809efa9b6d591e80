"""The one registry helper: every concept chosen by name (models, dataset layouts, losses, optimisers, schedules,
metrics) lives in a :class:`Registry`.

A registry maps names to objects (factories, classes, specs) with optional per-entry metadata. Registration is by
decorator, lookups of an unknown name raise :class:`UnknownNameError` (a ``ValueError``) listing the known names and
suggesting the closest ones. This module is the bottom layer: it imports nothing from lesionseg.

Example:
    >>> LOSSES = Registry("loss")
    >>> @LOSSES.register("dice")
    ... def dice_loss(): ...
    >>> LOSSES.get("dise")  # doctest: +SKIP
    UnknownNameError: unknown loss 'dise' (did you mean 'dice'?); known: dice
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar, overload

__all__ = ["Registry", "UnknownNameError", "suggest"]

T = TypeVar("T")
_O = TypeVar("_O")


class UnknownNameError(ValueError, KeyError):
    """A name no registry entry has. A ``ValueError`` (bad input), and a ``KeyError`` for callers that looked names
    up in the dicts the registries replaced.

    Attributes:
        name: the name asked for.
        known: the registered names, sorted.
        suggestions: the closest known names, best first (may be empty).
    """

    def __init__(self, message: str, name: str, known: list[str], suggestions: list[str]) -> None:
        super().__init__(message)
        self.name = name
        self.known = known
        self.suggestions = suggestions

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def suggest(name: str, known: list[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """The names in ``known`` closest to ``name`` (difflib's ratio, best first), at most ``n``."""
    return difflib.get_close_matches(name, known, n=n, cutoff=cutoff)


class Registry(Generic[T]):
    """Named entries of one kind, in registration order, each with a metadata mapping.

    Args:
        kind: what an entry is, for messages (``"model"``, ``"loss"``, ``"optim.scheduler"``).
    """

    def __init__(self, kind: str) -> None:
        if not kind:
            raise ValueError("a registry needs a kind for its messages")
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._info: dict[str, Mapping[str, Any]] = {}

    def add(self, name: str, obj: T, **info: Any) -> T:
        """Register ``obj`` under ``name`` with metadata ``info``; returns ``obj``.

        Raises:
            ValueError: an empty name or one already registered.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        self._info[name] = MappingProxyType(dict(info))
        return obj

    @overload
    def register(self, name: _O, /) -> _O: ...

    @overload
    def register(self, name: str | None = None, /, **info: Any) -> Callable[[_O], _O]: ...

    def register(self, name: Any = None, /, **info: Any) -> Any:
        """Decorator registering its argument under ``name`` (default: the decorated object's ``__name__``).

        Usable bare (``@reg.register``), with a name (``@reg.register("dice")``) or with metadata only
        (``@reg.register(cpu_size=True)``). Returns the decorated object unchanged.
        """
        if name is not None and not isinstance(name, str):
            return self.add(name.__name__, name)
        if name in self._entries:  # refuse at once, not when the decorator is applied
            raise ValueError(f"{self.kind} {name!r} is already registered")

        def wrap(obj: _O) -> _O:
            if not callable(obj):
                raise ValueError(f"registered {self.kind} {name!r} must be callable, got {obj!r}")
            self.add(name if name is not None else obj.__name__, obj, **info)  # type: ignore[arg-type]
            return obj

        return wrap

    def get(self, name: str) -> T:
        """The entry called ``name``.

        Raises:
            UnknownNameError: unknown name; the message suggests the closest known names and lists all of them.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.unknown(name) from None

    def info(self, name: str) -> Mapping[str, Any]:
        """The metadata registered with ``name`` (read-only).

        Raises:
            UnknownNameError: unknown name.
        """
        if name not in self._entries:
            raise self.unknown(name)
        return self._info[name]

    def unknown(self, name: object) -> UnknownNameError:
        """The error for an unknown ``name``: ``unknown <kind> 'x' (did you mean 'y'?); known: a, b, c``."""
        known = self.names()
        close = suggest(name, known) if isinstance(name, str) else []
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        listed = ", ".join(known) if known else "none registered"
        return UnknownNameError(f"unknown {self.kind} {name!r}{hint}; known: {listed}", str(name), known, close)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs in registration order."""
        return list(self._entries.items())

    def copy(self) -> Registry[T]:
        """A registry with the same entries (tests register into a copy and throw it away)."""
        other: Registry[T] = Registry(self.kind)
        other._entries = dict(self._entries)
        other._info = dict(self._info)
        return other

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"
