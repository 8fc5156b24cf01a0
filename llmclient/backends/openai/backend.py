"""The OpenAI-compatible backend: OpenAI, OpenRouter, vLLM, Ollama, TGI and any ``/v1`` server.

It speaks the chat-completions wire itself (``wire``) over httpx2, rather than through the openai
SDK, which costs over twice a raw request here (docs/architecture.md). What differs between
providers is a :class:`~llmclient.backends.openai.providers.Provider` object; the HTTP seam is
``transport``. Every error that leaves an exchange with the server passes :meth:`_boundary` once:
transport failures become typed errors there, and the API key is masked there.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from typing import Any, cast

import httpx2
from typing_extensions import Unpack

from llmclient._settings import read_settings
from llmclient.backend import ChatBackend, Messages
from llmclient.backends.openai.providers import PROVIDERS, Provider, provider_named
from llmclient.backends.openai.settings import OpenAICompatibleSettings, with_retry_table
from llmclient.backends.openai.transport import AiohttpTransport, ClientTransport, map_transport_error
from llmclient.backends.openai.wire import StreamReader, build_body, error_from_status, parse_completion
from llmclient.config import BackendConfig
from llmclient.errors import LLMClientError, redact
from llmclient.types import ChatRequest, ChatResponse, GenerationOptions, GenerationParams, StreamDelta

logger = logging.getLogger("llmclient")


class OpenAICompatibleBackend(ChatBackend):
    """Chat completions from any OpenAI-compatible HTTP API.

    Construct it through :func:`llmclient.load`, or directly: ``settings`` (an
    :class:`OpenAICompatibleSettings`) and keyword ``options`` (single settings, laid over it and
    checked like a config file) configure it; ``preset`` names the provider (``"openrouter"``) or
    is a :class:`Provider`. ``transport``/``async_transport`` (an httpx2 transport) or
    ``http_client``/``async_http_client`` (an httpx2 client) replace the HTTP layer: that is where
    tests, recorders, proxies and custom certificates plug in. Clients passed in stay open on close.
    """

    type_name = "openai-compatible"

    def __init__(
        self,
        model: str,
        *,
        settings: OpenAICompatibleSettings | None = None,
        preset: Provider | str = "openai-compatible",
        name: str | None = None,
        defaults: GenerationParams | None = None,
        transport: httpx2.BaseTransport | None = None,
        async_transport: httpx2.AsyncBaseTransport | None = None,
        http_client: httpx2.Client | None = None,
        async_http_client: httpx2.AsyncClient | None = None,
        **options: Any,
    ) -> None:
        provider = provider_named(preset) if isinstance(preset, str) else preset
        source = BackendConfig(
            type=provider.name, model=model, options=options, source=f"{type(self).__name__}()"
        )
        settings = read_settings(provider.settings_class, source, base=provider.adopt(settings))
        settings = provider.resolve(settings, source)
        super().__init__(model=model, name=name or provider.name, defaults=defaults)
        self.settings = settings
        self.provider = provider
        self.base_url = cast(str, settings.base_url).rstrip("/")
        self._url = httpx2.URL(f"{self.base_url}/chat/completions")
        self._secrets = (settings.api_key,) if settings.api_key else ()
        self._wire = provider.wire_options(settings)
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        if settings.api_key:
            self._headers["authorization"] = f"Bearer {settings.api_key}"
        self._headers.update({**settings.headers, **provider.headers(settings)})
        timeout = httpx2.Timeout(settings.timeout, connect=settings.connect_timeout)
        self._extensions = {"timeout": timeout.as_dict()}
        self._owns_client = http_client is None
        self._client = http_client or self._sync_client(settings, transport, timeout)
        if async_transport is None and hasattr(transport, "handle_async_request"):
            async_transport = cast(httpx2.AsyncBaseTransport, transport)  # one object serving both sides
        self._owns_async_transport = async_transport is None and async_http_client is None
        self._async_transport = async_transport or (
            ClientTransport(async_http_client)
            if async_http_client is not None
            else AiohttpTransport(
                verify=settings.verify,
                cert=settings.cert,
                proxy=settings.proxy,
                trust_env=settings.trust_env,
                max_connections=settings.max_connections,
            )
        )

    @staticmethod
    def _sync_client(
        settings: OpenAICompatibleSettings, transport: httpx2.BaseTransport | None, timeout: httpx2.Timeout
    ) -> httpx2.Client:
        if transport is not None:
            return httpx2.Client(transport=transport, timeout=timeout)
        limits = httpx2.Limits(
            max_connections=settings.max_connections, max_keepalive_connections=settings.max_connections
        )
        # httpx2 builds its own transports, so proxies from the environment are mounted too
        return httpx2.Client(
            verify=settings.verify,
            cert=settings.cert,
            trust_env=settings.trust_env,
            limits=limits,
            proxy=settings.proxy,
            timeout=timeout,
        )

    @property
    def context_window(self) -> int | None:
        """The ``context_window`` setting: a remote backend knows the window only where configured."""
        return self.settings.context_window

    # -- where errors leave: mapped and masked, once ------------------------------------------

    @contextlib.contextmanager
    def _boundary(self) -> Iterator[None]:
        """Every error of an exchange with the server passes here once, before the retry policy
        logs it or the caller sees it: transport failures become typed errors, the key is masked.
        """
        try:
            yield
        except httpx2.HTTPError as exc:
            raise _masked(map_transport_error(exc), self._secrets) from exc
        except LLMClientError as exc:
            _masked(exc, self._secrets)
            raise

    # -- one request: send, check the status, read; sync, and the one async path ---------------

    def _encode(self, request: ChatRequest, *, stream: bool) -> bytes:
        body = build_body(self.model, request, self._wire, stream=stream)
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    def _reply(self, response: httpx2.Response) -> ChatResponse:
        reply = parse_completion(response.content, status=response.status_code, headers=response.headers)
        return reply if reply.model else replace(reply, model=self.model)

    def _open(self, content: bytes) -> httpx2.Response:
        """Send the request; a reply with an error status is read and raised as its typed error."""
        request = self._client.build_request("POST", self._url, content=content, headers=self._headers)
        response = self._client.send(request, stream=True)
        if response.status_code < 400:
            return response
        with contextlib.closing(response):
            response.read()
        raise error_from_status(response.status_code, response.headers, response.content)

    async def _aopen(self, content: bytes) -> httpx2.Response:
        """Async :meth:`_open`: the one function that sends from async code, to the async transport."""
        request = httpx2.Request(
            "POST", self._url, content=content, headers=self._headers, extensions=self._extensions
        )
        response = await self._async_transport.handle_async_request(request)
        if response.status_code < 400:
            return response
        try:
            await response.aread()
        finally:
            await response.aclose()
        raise error_from_status(response.status_code, response.headers, response.content)

    def _post(self, content: bytes) -> ChatResponse:
        with self._boundary():
            response = self._open(content)
            with contextlib.closing(response):
                response.read()
            return self._reply(response)

    async def _apost(self, content: bytes) -> ChatResponse:
        with self._boundary():
            response = await self._aopen(content)
            try:
                await response.aread()
            finally:
                await response.aclose()
            return self._reply(response)

    def _start(self, content: bytes) -> httpx2.Response:
        with self._boundary():
            return self._open(content)

    async def _astart(self, content: bytes) -> httpx2.Response:
        with self._boundary():
            return await self._aopen(content)

    def _chat(self, request: ChatRequest) -> ChatResponse:
        content = self._encode(request, stream=False)
        return self.settings.retry.call(lambda: self._post(content))

    async def _achat(self, request: ChatRequest) -> ChatResponse:
        content = self._encode(request, stream=False)
        return await self.settings.retry.acall(lambda: self._apost(content))

    def _stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        content = self._encode(request, stream=True)
        response = self.settings.retry.call(lambda: self._start(content))
        reader = StreamReader()
        with contextlib.closing(response), self._boundary():
            for chunk in response.iter_bytes():
                yield from reader.feed(chunk)
            yield from reader.finish()

    async def _astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        content = self._encode(request, stream=True)
        response = await self.settings.retry.acall(lambda: self._astart(content))
        reader = StreamReader()
        try:
            with self._boundary():
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
        if concurrency > self.settings.max_connections:
            logger.warning(
                "concurrency=%d is above max_connections=%d: the requests beyond it wait for a free "
                "connection; set max_connections to at least the concurrency",
                concurrency,
                self.settings.max_connections,
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


def _masked(error: LLMClientError, secrets: tuple[str, ...]) -> LLMClientError:
    """``error`` with every secret replaced by ``***`` in its message, body and headers (in place)."""
    if not secrets:
        return error
    error.message = redact(error.message, secrets)
    error.args = (error.message, *error.args[1:])
    if isinstance(error.body, str):
        error.body = redact(error.body, secrets)
    elif error.body is not None:
        error.body = json.loads(redact(json.dumps(error.body, default=str), secrets))
    error.headers = {name: redact(value, secrets) for name, value in error.headers.items()}
    if error.provider_reason:
        error.provider_reason = redact(error.provider_reason, secrets)
    return error


def from_config(config: BackendConfig) -> OpenAICompatibleBackend:
    """Build the backend for ``config``, whose ``type`` picks the provider."""
    provider = PROVIDERS.get(config.type) or PROVIDERS["openai-compatible"]
    config = with_retry_table(config)
    settings = provider.resolve(read_settings(provider.settings_class, config), config)
    return OpenAICompatibleBackend(
        config.model,
        settings=settings,
        preset=provider,
        name=config.name or config.type,
        defaults=config.defaults,
    )
