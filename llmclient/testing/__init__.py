"""Test helpers: recorded replies for testing pipelines without a model, a key or a bill.

- :mod:`llmclient.testing.recording`: :class:`RecordingBackend`, :class:`ReplayBackend` and the
  ``cassette(path, backend, mode=...)`` helper, which put any backend behind a chat cassette.
- :mod:`llmclient.testing.cassette`: the cassette format, matching keys, scrubbing, atomic saves.
- :mod:`llmclient.testing.http`: :class:`CassetteTransport`, raw HTTP record/replay in VCR.py's format.
- :mod:`llmclient.testing.pytest_plugin`: the ``llm_cassette`` fixture and marker, loaded by pytest.
- :mod:`llmclient.testing.server`: a loopback OpenAI-compatible HTTP server for tests and benchmarks.

Importing this package is cheap: the names below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmclient.testing.cassette import Cassette, Interaction, RecordMode
    from llmclient.testing.http import CassetteTransport
    from llmclient.testing.recording import (
        CassetteSession,
        RecordingBackend,
        ReplayBackend,
        block_real_backends,
    )

_EXPORTS = {
    "Cassette": "llmclient.testing.cassette",
    "Interaction": "llmclient.testing.cassette",
    "RecordMode": "llmclient.testing.cassette",
    "CassetteTransport": "llmclient.testing.http",
    "CassetteSession": "llmclient.testing.recording",
    "RecordingBackend": "llmclient.testing.recording",
    "ReplayBackend": "llmclient.testing.recording",
    "block_real_backends": "llmclient.testing.recording",
}

__all__ = [
    "Cassette",
    "CassetteSession",
    "CassetteTransport",
    "Interaction",
    "RecordMode",
    "RecordingBackend",
    "ReplayBackend",
    "block_real_backends",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llmclient.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
