"""Reading settings and suggesting names: the leaf every configurable part imports.

It imports nothing else of llmclient at run time, so ``config``, ``registry``, ``types`` and the
backends can all use it without an import circle.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections import abc
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, fields, replace
from typing import Any, Protocol, TypeVar

from typing_extensions import Self

from llmclient.errors import ConfigError

COMMON_KEYS = ("type", "model", "defaults", "name")
"""Keys every backend table takes, whatever its type; the rest are the type's own settings."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """A ``"; did you mean 'x'?"`` suffix for a close match of ``name``, or an empty string."""
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class SettingsSource(Protocol):
    """Where settings are read from: a backend's config (``BackendConfig``) or one table nested in it."""

    @property
    def type(self) -> str:
        """The backend type the settings are for."""
        ...

    @property
    def options(self) -> Mapping[str, Any]:
        """The settings as given, by key."""
        ...

    def error(self, key: str, value: Any, problem: str, fix: str) -> ConfigError:
        """A :class:`ConfigError` naming where ``key`` was set, its value, the problem and the fix."""
        ...


@dataclass(frozen=True)
class _Table:
    """A table nested in a backend's settings (``retry = { ... }``); its errors name ``table.key``."""

    parent: SettingsSource
    key: str
    options: Mapping[str, Any]

    @property
    def type(self) -> str:
        return self.parent.type

    def error(self, key: str, value: Any, problem: str, fix: str) -> ConfigError:
        return self.parent.error(f"{self.key}.{key}", value, problem, fix)


class Settings:
    """Base of a backend type's settings dataclass: the type checks its own ranges.

    A subclass yields ``(key, problem, fix)`` from :meth:`problems` for each value out of range;
    :meth:`check` turns the first into a :class:`~llmclient.errors.ConfigError` that names the
    key, the value and where it came from. A field whose type is itself a :class:`Settings` class
    is a nested table (``retry = { max_attempts = 5 }``): read and checked with it, named
    ``retry.max_attempts`` in errors.
    """

    def problems(self) -> Iterator[tuple[str, str, str]]:
        """``(key, problem, fix)`` for each setting whose value is out of range."""
        return iter(())

    def check(self, config: SettingsSource | None = None) -> Self:
        """These settings, or a :class:`ConfigError` for the first bad value (nested tables too).

        ``config`` says where the values came from (a file, a dict, keyword arguments); without it
        the error names the settings class.
        """
        for key, value, problem, fix in self._problems_within(""):
            if config is not None:
                raise config.error(key, value, problem, fix)
            raise ConfigError(f"{type(self).__name__}.{key} = {value!r}: {problem}. {fix}")
        return self

    def _problems_within(self, prefix: str) -> Iterator[tuple[str, Any, str, str]]:
        for key, problem, fix in self.problems():
            yield f"{prefix}{key}", getattr(self, key), problem, fix
        for name in getattr(self, "__dataclass_fields__", {}):
            value = getattr(self, name)
            if isinstance(value, Settings):
                yield from value._problems_within(f"{prefix}{name}.")


S = TypeVar("S", bound="Settings")


def read_settings(cls: type[S], config: SettingsSource, base: S | None = None) -> S:
    """Build a settings dataclass from ``config.options``, checking names and types.

    Unknown keys get a close-name suggestion; wrong types name the expected type; the settings class
    then checks its own ranges (:meth:`Settings.check`). Each backend type declares its settings as a
    :class:`Settings` dataclass with a docstring per field, and reads them through here. With
    ``base``, the keys ``config`` sets are laid over ``base`` (a backend's ``**options`` over its
    ``settings=``); without it, missing keys take the field defaults. A table given for a field
    typed as a :class:`Settings` class is read into that class the same way, over the base's value.
    """
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in config.options.items():
        if key not in known:
            if isinstance(config, _Table):
                allowed, scope = sorted(known), f"in the {config.key} table"
            else:
                allowed, scope = sorted([*known, *COMMON_KEYS]), f"for type {config.type!r}"
            problem = f"unknown setting {scope}{suggest(key, allowed)}"
            raise config.error(key, value, problem, f"Allowed: {', '.join(allowed)}")
        hint = hints[key]
        if isinstance(value, Mapping) and isinstance(hint, type) and issubclass(hint, Settings):
            inner = getattr(base, key) if base is not None else None
            values[key] = read_settings(hint, _Table(config, key, value), base=inner)
            continue
        if not _matches(value, hints[key]):
            raise config.error(key, value, f"expected {_describe(hints[key])}", f"Fix the value of {key!r}")
        values[key] = value
    if base is not None:
        return replace(base, **values).check(config)  # type: ignore[type-var]
    for name, f in known.items():
        if name not in values and f.default is MISSING and f.default_factory is MISSING:
            raise config.error(name, None, "missing", f"Set {name} in the backend's settings")
    return cls(**values).check(config)


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is not None:
        if origin in (list, tuple, abc.Sequence):
            return isinstance(value, (list, tuple)) and all(
                _matches(v, typing.get_args(hint)[0]) for v in value
            )
        if origin in (dict, abc.Mapping):
            key_t, value_t = typing.get_args(hint)
            return isinstance(value, Mapping) and all(
                _matches(k, key_t) and _matches(v, value_t) for k, v in value.items()
            )
        return isinstance(value, origin)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    if isinstance(hint, type) and issubclass(hint, Settings):
        return f"a table of {', '.join(f.name for f in fields(hint))}"  # type: ignore[arg-type]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "nothing (omit it)"
    if origin is not None:
        return (
            getattr(origin, "__name__", str(origin))
            + " of "
            + ", ".join(_describe(a) for a in typing.get_args(hint))
        )
    return getattr(hint, "__name__", str(hint))
