"""Keeping real backends out of tests: :func:`block_real_backends`, behind ``--llm-block-real``.

While blocked, ``llmclient.load()`` refuses to build a backend of any installed type, so a test that
reaches a real model without a cassette fails instead of quietly calling it. A
:class:`~llmclient.testing.recording.RecordingBackend` that must record a reply builds its inner
backend inside :func:`building_real_backend`, which lets that one through.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from llmclient.errors import CassetteError

if TYPE_CHECKING:
    from llmclient.backend import ChatBackend
    from llmclient.config import BackendConfig

_building = 0
_building_lock = threading.Lock()


@contextlib.contextmanager
def building_real_backend() -> Iterator[None]:
    """Marks the span in which a :class:`~llmclient.testing.recording.RecordingBackend` builds its
    inner backend to record: blocked types are built there all the same.
    """
    global _building
    with _building_lock:
        _building += 1
    try:
        yield
    finally:
        with _building_lock:
            _building -= 1


class _BlockedFactory:
    """Stands in for an installed backend type's factory while real backends are blocked."""

    def __init__(self, type_name: str, reason: str) -> None:
        self.type_name = type_name
        self.reason = reason

    def __call__(self, config: BackendConfig) -> ChatBackend:
        if _building:
            from importlib.metadata import entry_points

            from llmclient.registry import ENTRY_POINT_GROUP

            (entry,) = entry_points(group=ENTRY_POINT_GROUP, name=self.type_name)
            backend: ChatBackend = entry.load()(config)
            return backend
        raise CassetteError(
            f"building a real backend (type {config.type!r}, model {config.model!r}) is blocked: "
            f"{self.reason}. Build it through a cassette instead (the llm_cassette fixture's "
            f"load(...) or wrap(lambda: ...)), which builds it only when a reply must be recorded."
        )


@contextlib.contextmanager
def block_real_backends(reason: str = "real backends are blocked here") -> Iterator[None]:
    """While active, ``llmclient.load()`` refuses to build backends of the installed types (those
    registered through the ``llmclient.backends`` entry points), raising :class:`CassetteError` with
    ``reason`` — except when a :class:`~llmclient.testing.recording.RecordingBackend` builds its inner
    backend to record a reply.

    Types registered at run time with :func:`llmclient.register` (test doubles) are left alone, and so
    are backends constructed directly: this guards the configuration path that pipelines use.
    """
    from importlib.metadata import entry_points

    from llmclient import registry

    registered = registry.runtime_types()
    guards: dict[str, _BlockedFactory] = {}
    for entry in entry_points(group=registry.ENTRY_POINT_GROUP):
        if entry.name not in registered and entry.name not in guards:
            guards[entry.name] = _BlockedFactory(entry.name, reason)
            registry.register(entry.name, guards[entry.name])
    try:
        yield
    finally:
        registered = registry.runtime_types()
        for type_name, guard in guards.items():
            if registered.get(type_name) is guard:
                registry.unregister(type_name)
