"""Test helpers: replies from a function or from a recording, for testing pipelines without a model,
a key or a bill.

The public surface:

- :class:`FunctionBackend`: a backend whose replies come from a Python function
  (:mod:`llmclient.testing.function`).
- :func:`cassette`, :class:`RecordingBackend`, :class:`ReplayBackend`: any backend behind a chat
  cassette, recorded once and replayed after (:mod:`llmclient.testing.recording`,
  :mod:`llmclient.testing.replay`).
- :class:`CassetteSession`: one cassette for every backend a test wraps, what the ``llm_cassette``
  pytest fixture gives (:mod:`llmclient.testing.session`).
- :func:`block_real_backends`: keep real models out of tests (:mod:`llmclient.testing.real_backends`).
- :class:`CassetteTransport`: raw HTTP record and replay in VCR.py's format, at the httpx2 transport.
- :class:`Cassette`, :class:`Interaction`, :data:`RecordMode`: the chat cassette itself, its entries
  and the record modes.
- :mod:`llmclient.testing.pytest_plugin`: the ``llm_cassette`` fixture, marker and options, loaded by
  pytest through the ``pytest11`` entry point.

Beneath them, :mod:`llmclient.testing.cassettes` holds the cassette internals (one replay index for
both levels) and :mod:`llmclient.testing.server` the loopback OpenAI-compatible server and its
faults. Importing this package is cheap: the names below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmclient.testing.cassettes.chat import Cassette
    from llmclient.testing.cassettes.entries import Interaction
    from llmclient.testing.cassettes.modes import RecordMode
    from llmclient.testing.cassettes.vcr import CassetteTransport
    from llmclient.testing.function import FunctionBackend
    from llmclient.testing.real_backends import block_real_backends
    from llmclient.testing.recording import RecordingBackend, cassette
    from llmclient.testing.replay import ReplayBackend
    from llmclient.testing.session import CassetteSession

_EXPORTS = {
    "Cassette": "llmclient.testing.cassettes.chat",
    "CassetteSession": "llmclient.testing.session",
    "CassetteTransport": "llmclient.testing.cassettes.vcr",
    "FunctionBackend": "llmclient.testing.function",
    "Interaction": "llmclient.testing.cassettes.entries",
    "RecordMode": "llmclient.testing.cassettes.modes",
    "RecordingBackend": "llmclient.testing.recording",
    "ReplayBackend": "llmclient.testing.replay",
    "block_real_backends": "llmclient.testing.real_backends",
    "cassette": "llmclient.testing.recording",
}

__all__ = [
    "Cassette",
    "CassetteSession",
    "CassetteTransport",
    "FunctionBackend",
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
