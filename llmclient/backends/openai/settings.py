"""Settings of the OpenAI-compatible backend, as written in ``llmclient.toml``, checked for range.

Retries are the nested ``retry`` table, read into :class:`~llmclient.retry.RetryPolicy`, where
those settings are declared (once). A provider that adds settings of its own extends
:class:`OpenAICompatibleSettings` next to the provider (OpenRouter's, in ``providers.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from llmclient._settings import Settings
from llmclient.backends.openai.credentials import credentials
from llmclient.config import BackendConfig
from llmclient.cost import Prices
from llmclient.errors import redact
from llmclient.retry import RetryPolicy

logger = logging.getLogger("llmclient")


@dataclass(frozen=True, repr=False)
class OpenAICompatibleSettings(Settings):
    """Settings of an OpenAI-compatible backend, as written in ``llmclient.toml``."""

    base_url: str | None = None
    """API root ending in ``/v1``; the provider's when unset."""
    api_key_env: str | None = None
    """Environment variable to read the API key from; the provider's (``OPENAI_API_KEY``, ...) when unset."""
    api_key: str | None = field(default=None, repr=False)
    """The key itself. Prefer ``api_key_env``: keys in files end up in version control."""
    headers: dict[str, str] = field(default_factory=dict)
    """Extra headers sent with every request; the values of key headers are masked like ``api_key``."""
    secret_headers: list[str] = field(default_factory=list)
    """More headers whose values are credentials, masked wherever the key is (``["x-my-token"]``)."""
    timeout: float = 600.0
    """Seconds to wait for the server to send data, per read (as the openai SDK)."""
    deadline: float = 300.0
    """Seconds one attempt may take in all, however the server trickles data; then ``TimeoutError``."""
    stream_idle_timeout: float = 120.0
    """Seconds a stream may go without an event (comments such as keep-alives do not count)."""
    connect_timeout: float = 10.0
    """Seconds to wait for a connection."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """How failed requests are retried: a table such as ``{ max_attempts = 5, max_wait = 60 }``."""
    max_connections: int = 100
    """Connections kept open at most; size it to the concurrency you run."""
    proxy: str | None = None
    """Proxy URL; ``HTTPS_PROXY`` and friends apply too unless ``trust_env`` is false."""
    verify: bool | str = True
    """TLS verification: true, false, or the path of a CA bundle."""
    cert: str | None = None
    """Client certificate file (PEM)."""
    trust_env: bool = True
    """Read proxy and CA settings from the environment."""
    context_window: int | None = None
    """The model's context window in tokens, where you know it (the server is not asked)."""
    prices: Prices = field(default_factory=Prices)
    """Per-token prices, ``{ input_per_million = 0.15, output_per_million = 0.6 }``: a reply's
    ``usage.cost`` where the provider reports none (OpenRouter's own ``usage.cost`` always wins)."""
    extra_body: dict[str, Any] = field(default_factory=dict)
    """Fields added to every request body."""
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] | None = None
    """Body field for ``max_new_tokens``, when the server wants the other one."""
    developer_role: Literal["developer", "system"] = "developer"
    """How ``developer`` messages are sent: as they are, or as ``system`` for servers without the role."""
    structured_fallback: Literal["error", "prompt"] = "error"
    """When the model refuses ``response_format`` (HTTP 400 "not supported"): ``"error"`` raises
    ``UnsupportedFeatureError``; ``"prompt"`` sends the schema in the system message instead (the
    reply is checked the same way)."""
    scoring: Literal["first_token", "prompt_logprobs"] | None = None
    """How ``score``/``choose`` read candidates: ``"prompt_logprobs"`` (exact, a vLLM server) or
    ``"first_token"`` (one call reading the likely first tokens, ``exact=False``); the provider's way
    when unset (``vllm``: prompt_logprobs; the others: first_token)."""
    structured_retries: int | None = None
    """Times a reply that does not match ``response_format`` is sent back with the validation error;
    1 when ``structured_fallback = "prompt"``, else 0."""

    @property
    def credentials(self) -> tuple[str, ...]:
        """Every secret these settings hold (key, key headers, URL password), dummy values left out."""
        return credentials(self.api_key, self.headers, self.secret_headers, self.base_url)

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
        return redact(f"{type(self).__name__}({shown})", self.credentials)

    def problems(self) -> Iterator[tuple[str, str, str]]:
        """Timeouts above zero, at least one connection, a context window of at least one token,
        no negative structured retries.
        """
        for name in ("timeout", "connect_timeout", "deadline", "stream_idle_timeout"):
            if not getattr(self, name) > 0:
                yield name, "must be a number of seconds above 0", f"Set {name} to e.g. 30"
        if self.max_connections < 1:
            yield "max_connections", "must be at least 1", "Set it to the concurrency you run"
        if self.context_window is not None and self.context_window < 1:
            yield "context_window", "must be at least 1 token", "Set the model's window, or leave it out"
        if self.structured_retries is not None and self.structured_retries < 0:
            yield "structured_retries", "must be 0 or more", "Set it to e.g. 1, or leave it out"


RETRY_KEYS = tuple(f.name for f in fields(RetryPolicy))
"""The keys of the ``retry`` table; written flat in a backend table, they are the deprecated spelling."""


def with_retry_table(config: BackendConfig) -> BackendConfig:
    """``config`` with flat retry keys (``max_attempts = 1``, the old spelling) moved into ``retry``.

    The flat keys keep working for one release, with a warning on the ``llmclient`` logger; keys in
    a ``retry`` table win over flat ones.
    """
    flat = {key: value for key, value in config.options.items() if key in RETRY_KEYS}
    table = config.options.get("retry", {})
    if not flat or not isinstance(table, Mapping):
        return config
    logger.warning(
        "%s: the retry settings (%s) go in the retry table now, e.g. retry = { %s = %r }; "
        "the flat keys are deprecated",
        config.where(),
        ", ".join(flat),
        *next(iter(flat.items())),
    )
    options = {key: value for key, value in config.options.items() if key not in flat}
    return replace(config, options={**options, "retry": {**flat, **table}})
