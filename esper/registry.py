"""Named registries for every extension point, failing loudly on unknown names.

A registry maps a short name (the one users type in configs) to a factory. Looking up a name
that is not registered raises :class:`UnknownNameError`, whose message lists every valid name,
in the manner of ``google-research/rigl``'s ``mask_factory``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

__all__ = ["InvalidParameterError", "Registry", "UnknownNameError", "build"]

T = TypeVar("T")
R = TypeVar("R")


class UnknownNameError(KeyError):
    """A registry lookup used a name that is not registered."""

    def __init__(self, kind: str, name: str, valid: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.valid = valid
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(valid)}")

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    """A mapping from names to factories of one kind of thing.

    Args:
        kind: What the entries are, used in error messages (``"dataset"``, ``"drift"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a second use of a name is an error."""

        def _add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return _add

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names()) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)


class InvalidParameterError(ValueError):
    """A factory was given a parameter it does not accept."""


def build(
    factory: Callable[..., R],
    params: Mapping[str, Any],
    what: str,
    fixed: Mapping[str, Any] | None = None,
) -> R:
    """Call ``factory(**fixed, **params)``, first rejecting parameters it does not declare.

    Args:
        factory: A class or function with named parameters.
        params: Keyword arguments, typically from a config.
        what: How to name the thing in errors, e.g. ``"drift 'rotate'"``.
        fixed: Arguments supplied by the caller, not by the user (such as an input shape).

    Raises:
        InvalidParameterError: naming the unknown parameter and the accepted ones.
    """
    signature = inspect.signature(factory)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    fixed = dict(fixed or {})
    allowed = [
        n
        for n, p in signature.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in fixed
    ]
    if not accepts_any:
        unknown = [k for k in params if k not in allowed]
        if unknown:
            raise InvalidParameterError(
                f"{what} has no parameter {unknown[0]!r}; allowed: {', '.join(allowed) or '(none)'}"
            )
    try:
        return factory(**fixed, **params)
    except TypeError as err:
        raise InvalidParameterError(f"{what}: {err}") from err
