"""Backend types by name: the built-in ones and third parties' alike, through one entry-point group.

A package adds a backend type by declaring, in its ``pyproject.toml``::

    [project.entry-points."llmclient.backends"]
    mytype = "mypackage.backend:from_config"

where ``from_config(config: BackendConfig) -> ChatBackend``. llmclient's own types are declared the
same way; :func:`register` adds one at run time (tests, notebooks).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from llmclient._settings import suggest
from llmclient.errors import ConfigError

if TYPE_CHECKING:
    from llmclient.backend import ChatBackend
    from llmclient.config import BackendConfig

BackendFactory = Callable[["BackendConfig"], "ChatBackend"]
"""Builds a backend from its validated configuration."""

ENTRY_POINT_GROUP = "llmclient.backends"

_lock = threading.Lock()
_runtime: dict[str, BackendFactory] = {}
_discovered: dict[str, object] | None = None


def register(type_name: str, factory: BackendFactory) -> None:
    """Make ``type_name`` available to :func:`llmclient.load`, taking precedence over entry points."""
    with _lock:
        _runtime[type_name] = factory


def unregister(type_name: str) -> None:
    """Remove a type added with :func:`register`."""
    with _lock:
        _runtime.pop(type_name, None)


def runtime_types() -> dict[str, BackendFactory]:
    """The types added with :func:`register`, with their factories: a snapshot, not a live view.

    Entry-point types are not in it; tools that stand in for installed types while leaving run-time
    ones alone (:func:`llmclient.testing.block_real_backends`) read it.
    """
    with _lock:
        return dict(_runtime)


def _entry_points() -> dict[str, object]:
    global _discovered
    with _lock:
        if _discovered is None:
            from importlib.metadata import entry_points

            _discovered = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        return _discovered


def backend_types() -> list[str]:
    """Every backend type name known: registered at run time or through entry points."""
    return sorted({*_runtime, *_entry_points()})


def is_backend_type(type_name: str) -> bool:
    """Whether ``type_name`` names a known backend type."""
    return type_name in _runtime or type_name in _entry_points()


def get_factory(type_name: str) -> BackendFactory:
    """The factory for ``type_name``; a :class:`ConfigError` listing known types if there is none."""
    if type_name in _runtime:
        return _runtime[type_name]
    ep = _entry_points().get(type_name)
    if ep is None:
        raise ConfigError(
            f"unknown backend type {type_name!r}{suggest(type_name, backend_types())}; "
            f"known types: {', '.join(backend_types())}. Third-party types register through the "
            f"{ENTRY_POINT_GROUP!r} entry-point group."
        )
    factory: BackendFactory = ep.load()  # type: ignore[attr-defined]
    return factory
