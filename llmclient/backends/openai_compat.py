"""The OpenAI-compatible backend: OpenAI, OpenRouter, vLLM, Ollama, TGI and any ``/v1`` server.

It speaks the chat-completions wire itself (``_chat_completions``) over httpx2, rather than through
the openai SDK, which costs over twice a raw request here (docs/architecture.md). Providers differ
only by a data row (``_presets``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

import httpx2
from typing_extensions import Unpack

from llmclient._http import AiohttpTransport, map_transport_error
from llmclient._settings import Settings, read_settings
from llmclient.backend import ChatBackend, Messages
from llmclient.backends._chat_completions import (
    DONE,
    SSEDecoder,
    WireOptions,
    build_body,
    error_from_status,
    load_event,
    parse_chunk,
    parse_completion,
)
from llmclient.backends._presets import PRESETS, Preset
from llmclient.config import BackendConfig
from llmclient.errors import BackendUnavailableError, ConfigError, LLMClientError
from llmclient.retry import RetryPolicy
from llmclient.types import ChatRequest, ChatResponse, GenerationOptions, GenerationParams, StreamDelta

logger = logging.getLogger("llmclient")


@dataclass(frozen=True)
class OpenAICompatibleSettings(Settings):
    """Settings of an OpenAI-compatible backend, as written in ``llmclient.toml``."""

    base_url: str | None = None
    """API root ending in ``/v1``; the preset's when unset."""
    api_key_env: str | None = None
    """Environment variable to read the API key from; the preset's (``OPENAI_API_KEY``, ...) when unset."""
    api_key: str | None = None
    """The key itself. Prefer ``api_key_env``: keys in files end up in version control."""
    headers: dict[str, str] = field(default_factory=dict)
    """Extra headers sent with every request."""
    timeout: float = 600.0
    """Seconds to wait for the server to send data, per read (as the openai SDK)."""
    connect_timeout: float = 10.0
    """Seconds to wait for a connection."""
    max_attempts: int = 3
    """Tries in all for a failed request, the first included."""
    initial_backoff: float = 0.5
    """Seconds before the first retry when the server gives no ``Retry-After``."""
    max_backoff: float = 8.0
    """Longest exponential backoff step, in seconds."""
    max_wait: float = 120.0
    """Longest single wait; a longer ``Retry-After`` stops retrying."""
    max_total_wait: float = 300.0
    """Seconds after the first try past which no retry starts."""
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
    app_url: str | None = None
    """OpenRouter app attribution: sent as ``HTTP-Referer``."""
    app_title: str | None = None
    """OpenRouter app attribution: sent as ``X-Title``."""
    provider: dict[str, Any] | None = None
    """OpenRouter provider routing (``{"order": [...], "allow_fallbacks": false}``), sent as ``provider``."""
    models: list[str] | None = None
    """OpenRouter fallback models, tried in order when the main one fails; sent as ``models``."""
    extra_body: dict[str, Any] = field(default_factory=dict)
    """Fields added to every request body."""
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] | None = None
    """Body field for ``max_new_tokens``, when the server wants the other one."""


class OpenAICompatibleBackend(ChatBackend):
    """Chat completions from any OpenAI-compatible HTTP API.

    Construct it through :func:`llmclient.load` or directly. ``transport``/``async_transport`` (an
    httpx2 transport) or ``http_client``/``async_http_client`` (an httpx2 client) replace the HTTP
    layer: that is where tests, recorders, proxies and custom certificates plug in.
    """

    type_name = "openai-compatible"

    def __init__(
        self,
        *,
        model: str,
        base_url: str,
        api_key: str | None = None,
        name: str | None = None,
        defaults: GenerationParams | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        wire: WireOptions | None = None,
        max_connections: int = 100,
        proxy: str | None = None,
        verify: bool | str = True,
        cert: str | None = None,
        trust_env: bool = True,
        transport: httpx2.BaseTransport | None = None,
        async_transport: httpx2.AsyncBaseTransport | None = None,
        http_client: httpx2.Client | None = None,
        async_http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        super().__init__(model=model, name=name, defaults=defaults)
        self.base_url = base_url.rstrip("/")
        self._url = f"{self.base_url}/chat/completions"
        self._secrets = (api_key,) if api_key else ()
        self._retry = retry or RetryPolicy()
        self._wire = wire or WireOptions()
        request_headers = {"content-type": "application/json", "accept": "application/json"}
        if api_key:
            request_headers["authorization"] = f"Bearer {api_key}"
        request_headers.update(headers or {})
        self._headers = request_headers
        self._timeout = httpx2.Timeout(timeout, connect=connect_timeout)
        limits = httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        if async_transport is None and hasattr(transport, "handle_async_request"):
            async_transport = cast(httpx2.AsyncBaseTransport, transport)  # one object serving both sides
        self._owns_client = http_client is None
        if http_client is not None:
            self._client = http_client
        elif transport is not None:
            self._client = httpx2.Client(transport=transport, timeout=self._timeout)
        else:  # let httpx2 build its transports, so proxies from the environment are mounted too
            self._client = httpx2.Client(
                verify=verify,
                cert=cert,
                trust_env=trust_env,
                limits=limits,
                proxy=proxy,
                timeout=self._timeout,
            )
        # Async requests go straight to the transport when the client would be ours: the
        # AsyncClient layer adds a quarter to each request and nothing we use (architecture.md).
        self._async_client = async_http_client
        self._async_transport = async_transport or AiohttpTransport(
            verify=verify, cert=cert, proxy=proxy, trust_env=trust_env, max_connections=max_connections
        )
        self._owns_async_transport = async_transport is None and async_http_client is None
        self._max_connections = max_connections
        self._url_obj = httpx2.URL(self._url)
        self._extensions = {"timeout": self._timeout.as_dict()}

    # -- one request, sync and async: send, check the status, read -----------------------------

    def _encode(self, request: ChatRequest, *, stream: bool) -> bytes:
        body = build_body(self.model, request, self._wire, stream=stream)
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    @contextlib.contextmanager
    def _transport_errors(self) -> Iterator[None]:
        try:
            yield
        except httpx2.HTTPError as exc:
            raise map_transport_error(exc, self._secrets) from exc

    def _error(self, response: httpx2.Response) -> Exception:
        return error_from_status(
            response.status_code, response.headers, response.content, secrets=self._secrets
        )

    def _reply(self, response: httpx2.Response) -> ChatResponse:
        reply = parse_completion(
            response.content, status=response.status_code, headers=response.headers, secrets=self._secrets
        )
        return reply if reply.model else replace(reply, model=self.model)

    def _open(self, content: bytes) -> httpx2.Response:
        """Send the request; a reply with an error status is read and raised as its typed error."""
        request = self._client.build_request("POST", self._url, content=content, headers=self._headers)
        with self._transport_errors():
            response = self._client.send(request, stream=True)
            if response.status_code < 400:
                return response
            try:
                response.read()
            finally:
                response.close()
        raise self._error(response)

    async def _aopen(self, content: bytes) -> httpx2.Response:
        """Async :meth:`_open`."""
        with self._transport_errors():
            if self._async_client is None:
                request = httpx2.Request(
                    "POST", self._url_obj, content=content, headers=self._headers, extensions=self._extensions
                )
                response = await self._async_transport.handle_async_request(request)
            else:
                request = self._async_client.build_request(
                    "POST", self._url, content=content, headers=self._headers
                )
                response = await self._async_client.send(request, stream=True)
            if response.status_code < 400:
                return response
            try:
                await response.aread()
            finally:
                await response.aclose()
        raise self._error(response)

    def _post(self, content: bytes) -> ChatResponse:
        response = self._open(content)
        with self._transport_errors():
            try:
                response.read()
            finally:
                response.close()
        return self._reply(response)

    async def _apost(self, content: bytes) -> ChatResponse:
        response = await self._aopen(content)
        with self._transport_errors():
            try:
                await response.aread()
            finally:
                await response.aclose()
        return self._reply(response)

    def _chat(self, request: ChatRequest) -> ChatResponse:
        content = self._encode(request, stream=False)
        return self._retry.call(lambda: self._post(content))

    async def _achat(self, request: ChatRequest) -> ChatResponse:
        content = self._encode(request, stream=False)
        return await self._retry.acall(lambda: self._apost(content))

    def _stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        content = self._encode(request, stream=True)
        response = self._retry.call(lambda: self._open(content))
        reader = _StreamReader(self._secrets)
        try:
            with self._transport_errors():
                for chunk in response.iter_bytes():
                    yield from reader.feed(chunk)
            yield from reader.finish()
        finally:
            response.close()

    async def _astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        content = self._encode(request, stream=True)
        response = await self._retry.acall(lambda: self._aopen(content))
        reader = _StreamReader(self._secrets)
        try:
            with self._transport_errors():
                async for chunk in response.aiter_bytes():
                    for delta in reader.feed(chunk):
                        yield delta
            for delta in reader.finish():
                yield delta
        finally:
            await response.aclose()

    async def _achat_many(
        self, requests: Sequence[ChatRequest], concurrency: int
    ) -> list[ChatResponse | LLMClientError]:
        if concurrency > self._max_connections:
            logger.warning(
                "concurrency=%d is above max_connections=%d: the requests beyond it wait for a free "
                "connection; set max_connections to at least the concurrency",
                concurrency,
                self._max_connections,
            )
        return await super()._achat_many(requests, concurrency)

    # -- the rest of the interface ----------------------------------------------------------

    def render_prompt(self, messages: Messages, **options: Unpack[GenerationOptions]) -> str:
        """The JSON body that would be sent for ``messages`` (without the API key)."""
        request = self.prepare(messages, options)
        body = build_body(self.model, request, self._wire, stream=False)
        return json.dumps(body, indent=2, ensure_ascii=False)

    def _close(self) -> None:
        if self._owns_client:
            self._client.close()
        if self._owns_async_transport and isinstance(self._async_transport, AiohttpTransport):
            self._async_transport.close_sync()

    async def _aclose(self) -> None:
        if self._owns_client:
            self._client.close()
        if self._owns_async_transport:
            await self._async_transport.aclose()


class _StreamReader:
    """Turns SSE bytes into deltas and checks that the stream ended properly."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self._decoder = SSEDecoder()
        self._secrets = secrets
        self._done = False
        self._finished = False

    def feed(self, chunk: bytes) -> list[StreamDelta]:
        """Deltas completed by ``chunk``; events after ``[DONE]`` are ignored."""
        if self._done:
            return []
        deltas = []
        for data in self._decoder.feed(chunk):
            if data == DONE:
                self._done = True
                break
            delta = parse_chunk(load_event(data, secrets=self._secrets), secrets=self._secrets)
            if delta.finish_reason is not None:
                self._finished = True
            deltas.append(delta)
        return deltas

    def finish(self) -> list[StreamDelta]:
        """What the body's end completes; a stream cut off before its end raises."""
        deltas = [] if self._done else self.feed(b"\n\n")
        if not self._done and not self._finished:
            raise BackendUnavailableError(
                "the stream ended before the reply was complete (no finish_reason and no [DONE]); "
                "the connection was probably cut"
            )
        return deltas


def from_config(config: BackendConfig) -> OpenAICompatibleBackend:
    """Build the backend for ``config``, whose ``type`` picks the preset."""
    preset = PRESETS.get(config.type) or PRESETS["openai-compatible"]
    settings = read_settings(OpenAICompatibleSettings, config)
    base_url = settings.base_url or _env(preset.base_url_env) or preset.base_url
    if not base_url:
        raise ConfigError(
            f"{config.where('base_url')} is missing: type {config.type!r} needs the server's API root, "
            f'e.g. base_url = "http://localhost:8000/v1"'
        )
    api_key = _api_key(config, settings, preset, base_url)
    headers = dict(settings.headers)
    if settings.app_url:
        headers["HTTP-Referer"] = settings.app_url
    if settings.app_title:
        headers["X-Title"] = settings.app_title
    body_extra = dict(settings.extra_body)
    if settings.provider is not None:
        body_extra["provider"] = settings.provider
    if settings.models is not None:
        body_extra["models"] = settings.models
    return OpenAICompatibleBackend(
        model=config.model,
        base_url=base_url,
        api_key=api_key,
        name=config.name or config.type,
        defaults=config.defaults,
        headers=headers,
        timeout=settings.timeout,
        connect_timeout=settings.connect_timeout,
        retry=RetryPolicy(
            max_attempts=settings.max_attempts,
            initial_backoff=settings.initial_backoff,
            max_backoff=settings.max_backoff,
            max_wait=settings.max_wait,
            max_total_wait=settings.max_total_wait,
        ),
        wire=WireOptions(
            max_tokens_field=settings.max_tokens_field or preset.max_tokens_field,
            supports_top_k=preset.supports_top_k,
            body_extra=body_extra or None,
        ),
        max_connections=settings.max_connections,
        proxy=settings.proxy,
        verify=settings.verify,
        cert=settings.cert,
        trust_env=settings.trust_env,
    )


def _env(name: str | None) -> str | None:
    return os.environ.get(name) or None if name else None


def _api_key(
    config: BackendConfig, settings: OpenAICompatibleSettings, preset: Preset, base_url: str
) -> str | None:
    if settings.api_key:
        return settings.api_key
    env_name = settings.api_key_env or preset.key_env
    key = _env(env_name)
    if key:
        return key
    if settings.api_key_env or (preset.key_required and base_url.rstrip("/") == preset.base_url):
        raise ConfigError(
            f"{config.where()} (type {config.type!r}) needs an API key and ${env_name} is not set. "
            f"Set it (export {env_name}=...), or set api_key_env to the variable that holds your key"
        )
    return None
