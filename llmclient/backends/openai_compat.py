"""Deprecated: the remote backend moved to :mod:`llmclient.backends.openai`; this alias goes next release.

``OpenAICompatibleBackend``, ``OpenAICompatibleSettings`` and ``from_config`` are re-exported from
there; the wire codec is now ``llmclient.backends.openai.wire``, the provider presets
``llmclient.backends.openai.providers`` and the HTTP transport ``llmclient.backends.openai.transport``.
"""

from llmclient.backends.openai import OpenAICompatibleSettings
from llmclient.backends.openai.backend import OpenAICompatibleBackend, from_config

__all__ = ["OpenAICompatibleBackend", "OpenAICompatibleSettings", "from_config"]
