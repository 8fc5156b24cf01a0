"""A backend whose replies come from a Python function: :class:`FunctionBackend`, the test double to
reach for first.

The function receives the conversation and the generation parameters and returns the reply::

    from llmclient.testing import FunctionBackend

    backend = FunctionBackend(lambda messages, params: messages[-1].content.upper())
    assert backend.chat("hi").text == "HI"
    assert backend.requests[0].messages[-1].content == "hi"

It may return the reply's text, a whole :class:`~llmclient.types.ChatResponse`, or an iterable of
:class:`~llmclient.types.StreamDelta` s or strings (the pieces of a stream; a call that does not
stream joins them), be ``async``, be a generator (sync or async), or raise: an
:class:`~llmclient.errors.LLMClientError` reaches the caller as it was raised. Every call style works
(``chat``, ``achat``, ``stream``, ``astream``, ``chat_many``, ``achat_many``), and every request the
backend saw is kept in :attr:`FunctionBackend.requests`.

Given a ``scorer`` too, it scores candidates (``score``, ``choose`` and the rest): the scorer receives
the conversation and the candidates and returns each candidate's logprob::

    backend = FunctionBackend(echo, scorer=lambda messages, candidates: [-0.1, -2.3])
    assert backend.choose("Is it?", ["yes", "no"]).text == "yes"
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import TypeAlias

from llmclient.backend import ChatBackend
from llmclient.logprobs import RawScore, ScoreOptions
from llmclient.stream import StreamAccumulator
from llmclient.types import ChatRequest, ChatResponse, GenerationParams, Message, StreamDelta

Piece: TypeAlias = StreamDelta | str
"""One piece of a streamed reply: a delta, or just its text."""

FunctionReply: TypeAlias = str | ChatResponse | Iterable[Piece] | AsyncIterable[Piece]
"""What the function returns: the reply's text, a whole reply, or the pieces of a stream."""

ReplyFunction: TypeAlias = Callable[
    [list[Message], GenerationParams], FunctionReply | Awaitable[FunctionReply]
]
"""The function behind a :class:`FunctionBackend`: ``(messages, params) -> reply``, sync or async."""

ScoreFunction: TypeAlias = Callable[[list[Message], tuple[str, ...]], Sequence[float | RawScore]]
"""A :class:`FunctionBackend`'s scorer: ``(messages, candidates) -> logprobs``, one per candidate; a
number is an exact total logprob of one token, a :class:`~llmclient.logprobs.RawScore` says all."""

Settled: TypeAlias = str | ChatResponse | Iterable[Piece]
"""A function's reply once awaited, with async pieces gathered."""


class FunctionBackend(ChatBackend):
    """A backend that answers by calling ``function(messages, params)``.

    ``messages`` is the conversation as a list of :class:`~llmclient.types.Message`; ``params`` the
    call's :class:`~llmclient.types.GenerationParams` with the backend's ``defaults`` merged in. Text
    becomes a reply with ``finish_reason="stop"``; a :class:`ChatResponse` is returned as it is (its
    ``model`` filled in if empty); pieces are streamed one delta each, closed by a ``"stop"`` delta
    if none of them carried a finish reason.

    A sync function runs on the calling thread (an event loop's thread for ``achat``; write an
    ``async`` function to let ``achat_many`` overlap calls). An async function called from sync code
    runs on the backend's own loop thread; an async generator streamed from sync code is gathered
    there first.

    Args:
        function: the :data:`ReplyFunction`.
        model: the model replies report.
        name: the backend's name (``ChatResponse.backend``); default ``"function"``.
        defaults: generation parameters merged under every call's.
        context_window: the window the backend declares, for code that checks it.
        scorer: the :data:`ScoreFunction` that scores candidates; without one, scoring raises
            :class:`~llmclient.errors.UnsupportedFeatureError` as a backend that cannot score does.

    Attributes:
        requests: every request received, in order, as the backend saw it (defaults merged).
        scored: every scoring request received, with its candidates and options.
    """

    type_name = "function"

    def __init__(
        self,
        function: ReplyFunction,
        *,
        model: str = "function",
        name: str | None = None,
        defaults: GenerationParams | None = None,
        context_window: int | None = None,
        scorer: ScoreFunction | None = None,
    ) -> None:
        super().__init__(model=model, name=name, defaults=defaults)
        self.function = function
        self.scorer = scorer
        self.requests: list[ChatRequest] = []
        self.scored: list[tuple[ChatRequest, tuple[str, ...], ScoreOptions]] = []
        self._window = context_window
        self._lock = threading.Lock()

    @property
    def context_window(self) -> int | None:
        """The window given to the constructor, if any."""
        return self._window

    def _score(
        self, request: ChatRequest, candidates: Sequence[str], options: ScoreOptions
    ) -> list[RawScore]:
        if self.scorer is None:
            return super()._score(request, candidates, options)
        texts = tuple(candidates)
        with self._lock:
            self.scored.append((request, texts, options))
        found = self.scorer(list(request.messages), texts)
        return [v if isinstance(v, RawScore) else RawScore(float(v), 1, True) for v in found]

    def _call(self, request: ChatRequest) -> FunctionReply | Awaitable[FunctionReply]:
        with self._lock:
            self.requests.append(request)
        return self.function(list(request.messages), request.params)

    def _reply(self, result: Settled) -> ChatResponse:
        """``result`` as one reply: text wrapped, a reply kept, pieces joined."""
        if isinstance(result, str):
            return ChatResponse(text=result, finish_reason="stop", model=self.model, backend=self.name)
        if isinstance(result, ChatResponse):
            return result if result.model else replace(result, model=self.model)
        joined = StreamAccumulator(model=self.model, backend=self.name)
        for delta in self._deltas(result):
            joined.add(delta)
        return joined.response()

    def _deltas(self, result: Settled) -> Iterator[StreamDelta]:
        """``result`` as stream deltas: a reply is one delta; pieces are closed by a finish reason."""
        if isinstance(result, (str, ChatResponse)):
            yield self._reply(result).as_delta()
            return
        finished = False
        for piece in result:
            delta = _delta(piece)
            finished = finished or delta.finish_reason is not None
            yield delta
        if not finished:
            yield StreamDelta(finish_reason="stop")

    def _settled(self, result: FunctionReply | Awaitable[FunctionReply]) -> Settled:
        """``result`` for sync code: awaited, and async pieces gathered, on the backend's loop thread."""
        if inspect.isawaitable(result) or isinstance(result, AsyncIterable):
            return self._loop_thread.run(_settle(result))
        return result

    def _chat(self, request: ChatRequest) -> ChatResponse:
        return self._reply(self._settled(self._call(request)))

    async def _achat(self, request: ChatRequest) -> ChatResponse:
        return self._reply(await _settle(self._call(request)))

    def _stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        yield from self._deltas(self._settled(self._call(request)))

    async def _astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        result = self._call(request)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, AsyncIterable):
            for delta in self._deltas(result):
                yield delta
            return
        finished = False
        async for piece in result:
            delta = _delta(piece)
            finished = finished or delta.finish_reason is not None
            yield delta
        if not finished:
            yield StreamDelta(finish_reason="stop")


async def _settle(result: FunctionReply | Awaitable[FunctionReply]) -> Settled:
    """``result`` awaited, with async pieces gathered into a list."""
    if inspect.isawaitable(result):
        result = await result
    if isinstance(result, AsyncIterable):
        return [piece async for piece in result]
    return result


def _delta(piece: Piece) -> StreamDelta:
    return StreamDelta(text=piece) if isinstance(piece, str) else piece
