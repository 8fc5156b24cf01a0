"""The OpenAI-compatible backend, split by concern: provider, wire and transport.

- ``backend``: :class:`OpenAICompatibleBackend` (requests, streams, retries, the error boundary)
  and :func:`from_config`, the entry point of the ``openai``, ``openrouter``, ``vllm``, ``ollama``
  and ``openai-compatible`` types.
- ``settings``: :class:`OpenAICompatibleSettings`, range-checked, with the nested ``retry`` table.
- ``providers``: :class:`Provider` objects (:data:`PROVIDERS`); OpenRouter's own settings and hooks.
- ``wire``: the chat-completions codec, pure functions over bytes and dicts.
- ``schemas``: structured output on the wire: the strict ``response_format``, replies read back.
- ``fallback``: the prompt fallback when a model refuses ``response_format``, and validation retries.
- ``transport``: the HTTP seam (aiohttp-backed async transport, transport-error mapping).

Importing this package loads neither httpx2 nor aiohttp: the backend and its transport are imported
when first used (a backend is built, or one of their names is read from here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmclient.backends.openai.providers import PROVIDERS, OpenRouter, OpenRouterSettings, Provider
from llmclient.backends.openai.settings import OpenAICompatibleSettings

if TYPE_CHECKING:
    from llmclient.backends.openai.backend import OpenAICompatibleBackend, from_config

__all__ = [
    "PROVIDERS",
    "OpenAICompatibleBackend",
    "OpenAICompatibleSettings",
    "OpenRouter",
    "OpenRouterSettings",
    "Provider",
    "from_config",
]


def __getattr__(name: str) -> Any:
    """The backend's names, imported on first use (they bring httpx2 and aiohttp)."""
    if name in ("OpenAICompatibleBackend", "from_config"):
        from llmclient.backends.openai import backend

        return getattr(backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
