"""The OpenAI-compatible backend: OpenAI, OpenRouter, vLLM, Ollama, TGI and any ``/v1`` server.

It speaks the chat-completions wire itself (``wire``) over httpx2, rather than through the openai
SDK, which costs over twice a raw request here (docs/architecture.md). What differs between
providers is a :class:`~llmclient.backends.openai.providers.Provider` object; the HTTP seam is
``transport``. Every error that leaves an exchange with the server passes :meth:`_boundary` once:
transport failures become typed errors there, and the API key is masked there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, cast

import httpx2
from typing_extensions import Unpack

from llmclient._settings import read_settings
from llmclient.backend import ChatBackend, Messages
from llmclient.backends.openai.credentials import masked, public_url, split_userinfo
from llmclient.backends.openai.failures import refusal, refused
from llmclient.backends.openai.fallback import StructuredOutput, adrive, drive
from llmclient.backends.openai.limits import AttemptLimits, within
from llmclient.backends.openai.providers import PROVIDERS, Provider, provider_named
from llmclient.backends.openai.schemas import StrictFormat
from llmclient.backends.openai.scoring import (
    MissingLogprobs,
    first_token_request,
    prompt_logprob_plan,
    read_first_tokens,
)
from llmclient.backends.openai.settings import OpenAICompatibleSettings, with_retry_table
from llmclient.backends.openai.transport import (
    AiohttpTransport,
    ClientTransport,
    LearnsSecrets,
    map_transport_error,
    sync_client,
)
from llmclient.backends.openai.wire import StreamReader, build_body, parse_completion
from llmclient.config import BackendConfig
from llmclient.cost import Prices
from llmclient.errors import BackendClosedError, LLMClientError
from llmclient.logprobs import RawScore, ScoreOptions
from llmclient.retry import BackoffGate
from llmclient.stops import StopCutter, find_stop
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
        base_url, basic = split_userinfo(cast(str, settings.base_url))
        self.base_url = base_url.rstrip("/")  # without a password: it is printed and logged
        self._url = httpx2.URL(f"{self.base_url}/chat/completions")
        self._secrets = settings.credentials
        self._gate = BackoffGate()
        self._wire = provider.wire_options(settings)
        self._structured = StructuredOutput(settings)
        self._scoring_mode = settings.scoring or provider.scoring
        self._missing_logprobs = MissingLogprobs(self.name, model)
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        if basic:
            self._headers["authorization"] = basic
        if settings.api_key:
            self._headers["authorization"] = f"Bearer {settings.api_key}"
        self._headers.update({**settings.headers, **provider.headers(settings)})
        timeout = httpx2.Timeout(settings.timeout, connect=settings.connect_timeout)
        # a read never waits past the deadline, nor (in a stream) past the idle limit
        reads = {
            stream: httpx2.Timeout(
                min(settings.timeout, settings.deadline, *([settings.stream_idle_timeout] if stream else [])),
                connect=settings.connect_timeout,
            )
            for stream in (False, True)
        }
        self._extensions = {stream: {"timeout": reads[stream].as_dict()} for stream in (False, True)}
        self._owns_client = http_client is None
        self._sync_timeouts: dict[bool, dict[str, Any]] = {
            stream: {"timeout": reads[stream]} if self._owns_client else {} for stream in (False, True)
        }
        self._client = http_client or sync_client(settings, transport, timeout)
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
        for given in {id(t): t for t in (transport, async_transport) if t is not None}.values():
            if isinstance(given, LearnsSecrets):  # a recording transport scrubs our credentials by value
                given.add_secrets(self._secrets)
        if self._owns_async_transport and isinstance(self._async_transport, AiohttpTransport):
            # sessions left open (no close(), as in a short script) are closed when the backend is
            # collected or the interpreter exits, not reported as "Unclosed client session"
            weakref.finalize(self, self._async_transport.close_sync)

    @property
    def context_window(self) -> int | None:
        """The ``context_window`` setting: a remote backend knows the window only where configured."""
        return self.settings.context_window

    @property
    def credentials(self) -> tuple[str, ...]:
        """The API key, key header values, the base URL's password: masked wherever errors go."""
        return self._secrets

    @property
    def provider_name(self) -> str:
        """The provider's name (``openai``, ``openrouter``, ``vllm``, ``ollama``, ...), on spans."""
        return self.provider.name

    @property
    def prices(self) -> Prices | None:
        """The ``prices`` setting, where both prices are set."""
        return self.settings.prices if self.settings.prices.known else None

    @property
    def endpoint(self) -> str | None:
        """The base URL without its user, password or query keys."""
        return public_url(self.base_url)

    # -- where errors leave: mapped and masked, once ------------------------------------------

    @contextlib.contextmanager
    def _boundary(self) -> Iterator[None]:
        """Every error of an exchange with the server passes here once, before the retry policy
        logs it or the caller sees it: transport failures become typed errors, secrets are masked,
        and whatever a close in the middle of a call broke is "the backend was closed", never retried.
        """
        try:
            yield
        except Exception as exc:
            if self._closed:
                raise BackendClosedError() from exc
            if isinstance(exc, httpx2.HTTPError):
                raise masked(map_transport_error(exc), self._secrets) from exc
            if isinstance(exc, LLMClientError):
                masked(exc, self._secrets)
            raise

    # -- one request: send, check the status, read; sync, and the one async path ---------------

    def _encode(self, request: ChatRequest, *, stream: bool) -> bytes:
        body = build_body(self.model, request, self._wire, stream=stream)
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    def _reply(self, request: ChatRequest, response: httpx2.Response, raw: bytes) -> ChatResponse:
        reply = parse_completion(raw, status=response.status_code, headers=response.headers)
        at = find_stop(reply.text, request.params.stop) if request.params.stop else None
        if at is not None:  # the server left the stop string in: cut it, as the API promises
            reply = replace(reply, text=reply.text[:at], finish_reason="stop")
        return reply if reply.model else replace(reply, model=self.model)

    def _open(self, content: bytes, *, stream: bool) -> httpx2.Response:
        """Send the request; a reply that is an error (or no API reply at all) is raised typed."""
        if self._closed:
            raise BackendClosedError()
        request = self._client.build_request(
            "POST", self._url, content=content, headers=self._headers, **self._sync_timeouts[stream]
        )
        response = self._client.send(request, stream=True)
        if not refused(response.status_code, response.headers, stream=stream):
            return response
        with contextlib.closing(response):
            response.read()
        raise refusal(response.status_code, response.headers, response.content, stream=stream)

    async def _aopen(self, content: bytes, *, stream: bool) -> httpx2.Response:
        """Async :meth:`_open`: the one function that sends from async code, to the async transport."""
        if self._closed:
            raise BackendClosedError()
        request = httpx2.Request(
            "POST", self._url, content=content, headers=self._headers, extensions=self._extensions[stream]
        )
        response = await self._async_transport.handle_async_request(request)
        if not refused(response.status_code, response.headers, stream=stream):
            return response
        try:
            await response.aread()
        finally:
            await response.aclose()
        raise refusal(response.status_code, response.headers, response.content, stream=stream)

    def _post(self, request: ChatRequest, content: bytes) -> ChatResponse:
        limits = AttemptLimits(self.settings.deadline)
        with self._boundary():
            response = self._open(content, stream=False)
            body = bytearray()
            with contextlib.closing(response):
                for chunk in response.iter_bytes():  # read by pieces: a trickle meets the deadline
                    body += chunk
                    limits.check()
            return self._reply(request, response, bytes(body))

    async def _apost(self, request: ChatRequest, content: bytes) -> ChatResponse:
        limits = AttemptLimits(self.settings.deadline)
        with self._boundary():
            try:  # one deadline over sending and reading the whole body
                response = await within(limits.seconds_left(), self._aexchange(content))
            except asyncio.TimeoutError:
                raise limits.expired() from None
            return self._reply(request, response, response.content)

    async def _aexchange(self, content: bytes) -> httpx2.Response:
        """Send ``content`` and read the whole reply."""
        response = await self._aopen(content, stream=False)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    def _start(self, content: bytes) -> tuple[httpx2.Response, AttemptLimits]:
        limits = AttemptLimits(self.settings.deadline, self.settings.stream_idle_timeout)
        with self._boundary():
            return self._open(content, stream=True), limits

    async def _astart(self, content: bytes) -> tuple[httpx2.Response, AttemptLimits]:
        limits = AttemptLimits(self.settings.deadline, self.settings.stream_idle_timeout)
        with self._boundary():
            try:
                return await within(limits.seconds_left(), self._aopen(content, stream=True)), limits
            except asyncio.TimeoutError:
                raise limits.expired() from None

    def _send(self, request: ChatRequest) -> ChatResponse:
        content = self._encode(request, stream=False)
        return self.settings.retry.call(lambda: self._post(request, content), self._gate)

    async def _asend(self, request: ChatRequest) -> ChatResponse:
        content = self._encode(request, stream=False)
        return await self.settings.retry.acall(lambda: self._apost(request, content), self._gate)

    def _chat(self, request: ChatRequest) -> ChatResponse:
        reply: ChatResponse = drive(self._structured.attempts(request), self._send)  # see ``fallback``
        return self._missing_logprobs.reply(request, reply)

    async def _achat(self, request: ChatRequest) -> ChatResponse:
        return self._missing_logprobs.reply(
            request, await adrive(self._structured.attempts(request), self._asend)
        )

    def _stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        def start(sent: ChatRequest) -> tuple[httpx2.Response, AttemptLimits]:
            content = self._encode(sent, stream=True)
            return self.settings.retry.call(lambda: self._start(content), self._gate)

        response, limits = drive(self._structured.attempts(request, validate=False), start)
        reader = StreamReader(response.status_code, response.headers)
        cutter = StopCutter(request.params.stop or ())
        with contextlib.closing(response), self._boundary():
            try:
                for chunk in response.iter_bytes():
                    deltas = _fed(reader, chunk, limits)
                    yield from cutter.deltas(deltas) if cutter.stops else deltas  # no generator per chunk
                    limits.check()
            except httpx2.ReadTimeout as exc:  # the read timeout is the idle limit (or less)
                if not reader.finished:  # a finished reply is whole without [DONE]
                    raise (limits.expired() if limits.seconds_left() < 0.1 else exc) from exc
            yield from cutter.deltas(reader.finish(), last=True)
        self._missing_logprobs.check(request, text=reader.text, logprobs=reader.logprobs)

    async def _astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        async def start(sent: ChatRequest) -> tuple[httpx2.Response, AttemptLimits]:
            content = self._encode(sent, stream=True)
            return await self.settings.retry.acall(lambda: self._astart(content), self._gate)

        response, limits = await adrive(self._structured.attempts(request, validate=False), start)
        reader = StreamReader(response.status_code, response.headers)
        cutter = StopCutter(request.params.stop or ())
        chunks = response.aiter_bytes()
        try:
            with self._boundary():
                while True:
                    try:
                        chunk = await within(limits.seconds_left(finished=reader.finished), anext(chunks))
                    except StopAsyncIteration:
                        break
                    except asyncio.TimeoutError:
                        if reader.finished:  # whole, and the server left the connection open
                            break
                        raise limits.expired() from None
                    for delta in cutter.deltas(_fed(reader, chunk, limits)):
                        yield delta
                for delta in cutter.deltas(reader.finish(), last=True):
                    yield delta
            self._missing_logprobs.check(request, text=reader.text, logprobs=reader.logprobs)
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

    # -- scoring (``scoring``: vLLM's prompt_logprobs, else the first token) -----------------------

    def _score(
        self, request: ChatRequest, candidates: Sequence[str], options: ScoreOptions
    ) -> list[RawScore]:
        return self._loop_thread.run(self._ascore(request, candidates, options))  # the requests overlap

    async def _ascore(
        self, request: ChatRequest, candidates: Sequence[str], options: ScoreOptions
    ) -> list[RawScore]:
        if self._scoring_mode == "prompt_logprobs":
            plan = prompt_logprob_plan(request, candidates, options, self.name)
            return plan.read(await asyncio.gather(*(self._asend(r) for r in plan.requests)))
        reply = await self._asend(first_token_request(request, candidates, self.name))
        return read_first_tokens(reply, candidates, self.name)

    # -- the rest of the interface ----------------------------------------------------------

    def prepare(self, messages: Messages, options: Mapping[str, Any]) -> ChatRequest:
        """As every backend, with a ``response_format`` that reads ``null`` as strict mode sends it
        (:class:`~llmclient.backends.openai.schemas.StrictFormat`): streams are checked by it.
        """
        request = super().prepare(messages, options)
        fmt = request.params.response_format
        if fmt is None:
            return request
        return replace(request, params=replace(request.params, response_format=StrictFormat.of(fmt)))

    def render_prompt(self, messages: Messages, **options: Unpack[GenerationOptions]) -> str:
        """The JSON body that would be sent for ``messages`` (without the API key)."""
        request = self.prepare(messages, options)
        body = build_body(self.model, request, self._wire, stream=False)
        return json.dumps(body, indent=2, ensure_ascii=False)

    def _close(self) -> None:
        if self._owns_client:
            self._client.close()
        if self._owns_async_transport and isinstance(self._async_transport, AiohttpTransport):
            self._async_transport.close_sync()  # in-flight requests fail, as closed
        # the base class then closes the loop thread, which cancels what is still running there

    async def _aclose(self) -> None:
        if self._owns_client:
            self._client.close()
        if self._owns_async_transport:
            await self._async_transport.aclose()


def _fed(reader: StreamReader, chunk: bytes, limits: AttemptLimits) -> list[StreamDelta]:
    """The deltas ``chunk`` completes; an event (not a comment) resets the idle clock."""
    events = reader.events
    deltas = reader.feed(chunk)
    if reader.events != events:
        limits.event()
    return deltas


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
