"""``ChatBackend``: the one interface every backend implements, and the behaviour they share.

A backend implements a small contract: ``_chat`` (required), and where it can do better than the
defaults, ``_achat``, ``_stream``, ``_astream``, ``_achat_many``, ``_chat_many``, ``_close`` and
``_aclose``; a backend that can score candidates implements the hooks of
:class:`~llmclient.scoring.Scoring` (``_score`` and its async and batch forms), its base class. It
declares what it can do as attributes (``can_count_tokens``, ``context_window``). Everything public
(validation, parameter defaults, timing, sync/async bridging, ``chat_many`` ordering and
``return_exceptions``) is written once here. :class:`~llmclient.wrapper.WrapperBackend` is the base
of backends that add behaviour around another (recording, replay).
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any, ClassVar, Literal, overload

from typing_extensions import Self, Unpack

from llmclient import tracing
from llmclient._bridge import LoopThread, call_in_thread, iterate_in_thread
from llmclient.cost import Prices, priced
from llmclient.errors import BackendClosedError, InvalidRequestError, LLMClientError
from llmclient.scoring import Scoring
from llmclient.stream import AsyncChatStream, ChatStream
from llmclient.tools.calls import checked_calls
from llmclient.types import (
    ChatRequest,
    ChatResponse,
    GenerationOptions,
    GenerationParams,
    Message,
    StreamDelta,
    to_messages,
)
from llmclient.types import Messages as Messages  # re-exported: where the alias was first defined


class ChatBackend(Scoring, ABC):
    """Generate chat replies from one model, locally or over the network.

    Every method takes the same generation keyword arguments (:class:`GenerationOptions`); values not
    given come from the backend's configured defaults. Use a backend as a context manager, or call
    :meth:`close`, to release its model or connections.

    Attributes:
        name: the configured name of this backend (what appears in ``ChatResponse.backend``).
        model: the model it talks to.
        defaults: generation parameters applied when a call does not set them.
    """

    type_name: ClassVar[str] = ""
    """The registry name of this backend type, e.g. ``"openai-compatible"`` or ``"huggingface"``."""
    can_count_tokens: ClassVar[bool] = False
    """Whether :meth:`count_tokens` works (it needs the model's own tokenizer)."""
    in_process: ClassVar[bool] = False
    """Whether the model runs in this process: INTERNAL spans, not CLIENT (:mod:`llmclient.tracing`)."""

    @property
    def provider_name(self) -> str:
        """``gen_ai.provider.name`` of its spans: the type name, or the remote provider's name."""
        return self.type_name or type(self).__name__

    @property
    def prices(self) -> Prices | None:
        """Per-token prices for ``usage.cost`` where the provider reports none; ``None`` by default."""
        return None

    @property
    def context_window(self) -> int | None:
        """The model's context window in tokens, where the backend knows it; ``None`` otherwise.

        A local model reads it from its config (loading the model if needed); a remote backend
        knows it only where it was configured.
        """
        return None

    @property
    def endpoint(self) -> str | None:
        """Where requests go, for telling two backends of one type and model apart; ``None`` by default.

        A remote backend returns its base URL without credentials (no user, password or key in it):
        the batch runner puts it in its resume key, so two servers serving "llama3" do not share
        results. A local backend has none.
        """
        return None

    @property
    def credentials(self) -> tuple[str, ...]:
        """Every secret this backend was configured with: API keys, credential header values, passwords
        in URLs; empty by default.

        Whatever records this backend's traffic (a cassette) scrubs each of them by value, whatever its
        shape, so a key echoed in an error message or sent in a header of any name never reaches a file.
        A backend that holds secrets overrides this.
        """
        return ()

    def __init__(
        self, *, model: str, name: str | None = None, defaults: GenerationParams | None = None
    ) -> None:
        self.model = model
        self.name = name or self.type_name
        self.defaults = defaults or GenerationParams()
        self._loop_thread = LoopThread(f"llmclient-{self.name}")
        self._closed = False

    # -- the contract ------------------------------------------------------------------------

    @abstractmethod
    def _chat(self, request: ChatRequest) -> ChatResponse:
        """Produce one complete reply."""

    async def _achat(self, request: ChatRequest) -> ChatResponse:
        """Produce one reply from async code; by default ``_chat`` on a worker thread."""
        return await call_in_thread(self._chat, request)

    def _stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        """Produce the reply piece by piece; by default one piece holding the whole reply."""
        yield self._chat(request).as_delta()

    def _astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        """Stream from async code; by default ``_stream`` pumped from a worker thread."""
        return iterate_in_thread(lambda: self._stream(request))

    async def _achat_many(
        self, requests: Sequence[ChatRequest], concurrency: int
    ) -> list[ChatResponse | LLMClientError]:
        """Answer many requests, in input order, each item its reply or the typed error it raised.

        By default ``_achat`` with at most ``concurrency`` in flight. Errors are always collected per
        item; :meth:`chat_many` and :meth:`achat_many` decide once whether to raise the first.
        """
        gate = asyncio.Semaphore(concurrency)

        async def one(request: ChatRequest) -> ChatResponse | LLMClientError:
            async with gate:
                try:
                    return await self._timed_achat(request)
                except LLMClientError as exc:
                    return exc

        tasks = [asyncio.ensure_future(one(r)) for r in requests]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()

    def _chat_many(
        self, requests: Sequence[ChatRequest], concurrency: int
    ) -> list[ChatResponse | LLMClientError]:
        """:meth:`_achat_many` for sync callers; by default run on the backend's private loop thread.

        A backend whose batches run on a thread of its own (the local model) overrides this to hand
        them over from the calling thread directly.
        """
        return self._loop_thread.run(self._achat_many(requests, concurrency))

    def _close(self) -> None:  # an optional hook: most backends hold nothing
        """Release what the backend holds (models, connections). Safe to call twice."""

    async def _aclose(self) -> None:
        """Release from async code; by default ``_close``."""
        self._close()

    # -- the public interface ----------------------------------------------------------------

    def chat(self, messages: Messages, **options: Unpack[GenerationOptions]) -> ChatResponse:
        """Generate a complete reply to ``messages``.

        Raises :class:`~llmclient.errors.InvalidRequestError` for bad messages or parameters before
        anything is sent, and the typed errors of :mod:`llmclient.errors` for what fails after.
        """
        request = self.prepare(messages, options)
        with tracing.call(self, request) as call:
            started = time.perf_counter()
            return call.done(self._settle(request, self._finish(self._chat(request), started)))

    async def achat(self, messages: Messages, **options: Unpack[GenerationOptions]) -> ChatResponse:
        """Async :meth:`chat`."""
        request = self.prepare(messages, options)
        with tracing.call(self, request) as call:
            return call.done(self._settle(request, await self._timed_achat(request)))

    def stream(self, messages: Messages, **options: Unpack[GenerationOptions]) -> ChatStream:
        """Generate a reply piece by piece.

        Iterate the returned :class:`~llmclient.stream.ChatStream` for :class:`StreamDelta` pieces;
        its ``final()`` gives the whole reply. Closing it early (or leaving a ``with`` block) stops
        generation and frees the connection or model.
        """
        request = self.prepare(messages, options)
        return ChatStream(
            self._watched(request, self._stream(request), tracing.watched),
            model=self.model,
            backend=self.name,
            response_format=request.params.response_format,
            settle=lambda reply: checked_calls(reply, request),
        )

    def astream(self, messages: Messages, **options: Unpack[GenerationOptions]) -> AsyncChatStream:
        """Async :meth:`stream`: use ``async for delta in backend.astream(...)``."""
        request = self.prepare(messages, options)
        return AsyncChatStream(
            self._watched(request, self._astream(request), tracing.awatched),
            model=self.model,
            backend=self.name,
            response_format=request.params.response_format,
            settle=lambda reply: checked_calls(reply, request),
        )

    @overload
    def chat_many(
        self,
        conversations: Iterable[Messages],
        *,
        concurrency: int | None = None,
        return_exceptions: Literal[False] = False,
        **options: Unpack[GenerationOptions],
    ) -> list[ChatResponse]: ...

    @overload
    def chat_many(
        self,
        conversations: Iterable[Messages],
        *,
        concurrency: int | None = None,
        return_exceptions: Literal[True],
        **options: Unpack[GenerationOptions],
    ) -> list[ChatResponse | LLMClientError]: ...

    def chat_many(
        self,
        conversations: Iterable[Messages],
        *,
        concurrency: int | None = None,
        return_exceptions: bool = False,
        **options: Unpack[GenerationOptions],
    ) -> list[ChatResponse] | list[ChatResponse | LLMClientError]:
        """Reply to many conversations; results come back in input order.

        Remote backends keep up to ``concurrency`` requests in flight (default 16); local backends
        batch. With ``return_exceptions=True`` a failed item holds its
        :class:`~llmclient.errors.LLMClientError` instead of the first failure raising.
        """
        requests = self._prepare_many(conversations, options)
        with tracing.Batch(self, requests) as batch:
            results = self._chat_many(requests, _concurrency(concurrency))
            return _settled(batch.done(self._settle_all(requests, results)), return_exceptions)

    @overload
    async def achat_many(
        self,
        conversations: Iterable[Messages],
        *,
        concurrency: int | None = None,
        return_exceptions: Literal[False] = False,
        **options: Unpack[GenerationOptions],
    ) -> list[ChatResponse]: ...

    @overload
    async def achat_many(
        self,
        conversations: Iterable[Messages],
        *,
        concurrency: int | None = None,
        return_exceptions: Literal[True],
        **options: Unpack[GenerationOptions],
    ) -> list[ChatResponse | LLMClientError]: ...

    async def achat_many(
        self,
        conversations: Iterable[Messages],
        *,
        concurrency: int | None = None,
        return_exceptions: bool = False,
        **options: Unpack[GenerationOptions],
    ) -> list[ChatResponse] | list[ChatResponse | LLMClientError]:
        """Async :meth:`chat_many`."""
        requests = self._prepare_many(conversations, options)
        with tracing.Batch(self, requests) as batch:
            results = await self._achat_many(requests, _concurrency(concurrency))
            return _settled(batch.done(self._settle_all(requests, results)), return_exceptions)

    def render_prompt(self, messages: Messages, **options: Unpack[GenerationOptions]) -> str:
        """What the model will be given for ``messages``: the exact prompt text for a local model,
        the JSON request body for a remote one.
        """
        request = self.prepare(messages, options)
        return json.dumps([m.to_dict() for m in request.messages], indent=2, ensure_ascii=False)

    def count_tokens(self, messages: Messages) -> int:
        """Tokens the prompt for ``messages`` takes, where the backend has the model's tokenizer."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot count tokens: it has no local tokenizer for {self.model!r}"
        )

    def prepare(self, messages: Messages, options: Mapping[str, Any]) -> ChatRequest:
        """Check ``messages`` and ``options`` and merge the options over the backend's defaults."""
        if self._closed:
            raise BackendClosedError()
        params = self.defaults.merged(GenerationParams.from_options(options)) if options else self.defaults
        return ChatRequest(messages=tuple(to_messages(messages)), params=params)

    def close(self) -> None:
        """Release the model or connections. Later calls raise
        :class:`~llmclient.errors.BackendUnavailableError` ("the backend was closed").
        """
        self._closed = True
        try:
            self._close()
        finally:
            self._loop_thread.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        self._closed = True
        await self._aclose()
        self._loop_thread.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, model={self.model!r})"

    # -- shared helpers ----------------------------------------------------------------------

    def _prepare_many(
        self, conversations: Iterable[Messages], options: Mapping[str, Any]
    ) -> list[ChatRequest]:
        """A checked request for each conversation; one string or message is refused, not iterated."""
        if isinstance(conversations, (str, bytes, Mapping, Message)):
            raise InvalidRequestError(
                f"chat_many takes a list of conversations, got one {type(conversations).__name__}: "
                f"use chat() for one conversation, or pass [prompt] to chat_many"
            )
        return [self.prepare(c, options) for c in conversations]

    async def _timed_achat(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        return self._finish(await self._achat(request), started)

    def _finish(self, reply: ChatResponse, started: float) -> ChatResponse:
        return replace(reply, latency=time.perf_counter() - started, backend=self.name)

    def _watched(self, request: ChatRequest, deltas: Any, watch: Any) -> Any:
        """``deltas`` priced and traced by ``watch``, where there are prices or a tracer."""
        prices = self.prices
        return watch(deltas, self, request, prices) if prices is not None or tracing.enabled() else deltas

    def _settle(self, request: ChatRequest, reply: ChatResponse) -> ChatResponse:
        """``reply`` priced (where the provider gave no cost), its tool calls made whole and checked
        against the tools offered (:func:`~llmclient.tools.calls.checked_calls`), then with ``parsed``
        set when the request asked for a ``response_format`` and the model answered in text; a reply
        that does not pass raises :class:`~llmclient.errors.StructuredOutputError` (a
        :class:`~llmclient.tools.ToolCallError` for calls), carrying the priced reply.
        """
        reply = priced(reply, self.prices)
        if reply.tool_calls:
            return checked_calls(reply, request)
        fmt = request.params.response_format
        return reply if fmt is None else fmt.attach(reply)

    def _settle_all(
        self, requests: Sequence[ChatRequest], results: list[ChatResponse | LLMClientError]
    ) -> list[ChatResponse | LLMClientError]:
        """:meth:`_settle` for each item of a batch; an item that does not pass holds its error."""
        out: list[ChatResponse | LLMClientError] = []
        for request, result in zip(requests, results, strict=True):
            if isinstance(result, ChatResponse):
                try:
                    result = self._settle(request, result)
                except LLMClientError as exc:
                    result = exc
            out.append(result)
        return out


def _settled(results: list[Any], return_exceptions: bool) -> list[Any]:
    """``results`` as ``chat_many`` (and ``score_many``) return them: as they are, or the first
    failure raised.
    """
    if not return_exceptions:
        failed = next((r for r in results if isinstance(r, LLMClientError)), None)
        if failed is not None:
            raise failed
    return results


def _concurrency(value: int | None) -> int:
    if value is None:
        return 16
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError(f"concurrency must be an integer >= 1, got {value!r}")
    return value
