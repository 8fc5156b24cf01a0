"""Test helpers: recorded replies for testing pipelines without a model, a key or a bill.

Chat cassettes, for any backend:

- :mod:`llmclient.testing.recording`: :class:`RecordingBackend`, :class:`ReplayBackend` and the
  ``cassette(path, backend, mode=...)`` helper, which put any backend behind a chat cassette.
- :mod:`llmclient.testing.session`: :class:`CassetteSession`, one cassette for every backend a test wraps.
- :mod:`llmclient.testing.chat_cassette`: :class:`Cassette`, recorded interactions found by their key.
- :mod:`llmclient.testing.chat_format`: :class:`Interaction` and how requests and replies are written.
- :mod:`llmclient.testing.record_modes`: :data:`RecordMode` and what each mode records.
- :mod:`llmclient.testing.matching`: the matching key and the differences a miss reports.
- :mod:`llmclient.testing.scrubbing`: the secret scrubbing every cassette applies.
- :mod:`llmclient.testing.cassette_file`: the file under a cassette: YAML, atomic saves, locking, merging.
- :mod:`llmclient.testing.real_backends`: :func:`block_real_backends`, keeping real models out of tests.

And around them:

- :mod:`llmclient.testing.http`: :class:`CassetteTransport`, raw HTTP record/replay in VCR.py's format.
- :mod:`llmclient.testing.pytest_plugin`: the ``llm_cassette`` fixture and marker, loaded by pytest.
- :mod:`llmclient.testing.server`: a loopback OpenAI-compatible HTTP server for tests and benchmarks.
- :mod:`llmclient.testing.faults`: the faults real APIs produce, served by the loopback server.

Importing this package is cheap: the names below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmclient.testing.chat_cassette import Cassette
    from llmclient.testing.chat_format import Interaction
    from llmclient.testing.http import CassetteTransport
    from llmclient.testing.real_backends import block_real_backends
    from llmclient.testing.record_modes import RecordMode
    from llmclient.testing.recording import RecordingBackend, ReplayBackend, cassette
    from llmclient.testing.session import CassetteSession

_EXPORTS = {
    "Cassette": "llmclient.testing.chat_cassette",
    "Interaction": "llmclient.testing.chat_format",
    "RecordMode": "llmclient.testing.record_modes",
    "CassetteTransport": "llmclient.testing.http",
    "CassetteSession": "llmclient.testing.session",
    "RecordingBackend": "llmclient.testing.recording",
    "ReplayBackend": "llmclient.testing.recording",
    "cassette": "llmclient.testing.recording",
    "block_real_backends": "llmclient.testing.real_backends",
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
    "cassette",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llmclient.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
