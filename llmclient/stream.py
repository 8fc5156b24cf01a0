"""Streamed replies: iterate deltas as they arrive, get the whole reply at the end.

``ChatStream`` and ``AsyncChatStream`` share one accumulator, so a joined stream and a non-streamed
reply are built by the same rules: text and reasoning joined, tool-call fragments merged into calls
(:mod:`llmclient.tools.fragments`),
token logprobs joined in order, the last finish reason and usage kept.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

from typing_extensions import Self

from llmclient.structured import OutputFormat
from llmclient.tools.fragments import CallFragments
from llmclient.types import ChatResponse, FinishReason, StreamDelta, TokenLogprob, Usage

D = TypeVar("D", bound="Iterator[StreamDelta] | AsyncIterator[StreamDelta]")


class StreamAccumulator:
    """Folds stream deltas into one :class:`ChatResponse`."""

    def __init__(self, *, model: str, backend: str) -> None:
        self._model = model
        self._backend = backend
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._tool_calls = CallFragments()
        self._logprobs: list[TokenLogprob] = []
        self._details: dict[str, Any] = {}
        self._finish_reason: FinishReason | None = None
        self._usage: Usage | None = None
        self._started = time.perf_counter()

    def add(self, delta: StreamDelta) -> None:
        """Take one delta into the reply."""
        if delta.text:
            self._text.append(delta.text)
        if delta.finish_reason is not None:
            self._finish_reason = delta.finish_reason
        if delta.usage is not None:
            self._usage = delta.usage
        if delta.logprobs:
            self._logprobs.extend(delta.logprobs)
        details = delta.details
        if not details:
            return
        if "reasoning" not in details and "tool_calls" not in details:  # most chunks: one update
            self._details.update(details)
            return
        for key, value in details.items():
            if key == "reasoning":
                self._reasoning.append(value)
            elif key == "tool_calls":
                self._tool_calls.add(value)
            else:
                self._details[key] = value

    def response(self) -> ChatResponse:
        """The reply as accumulated so far."""
        details = dict(self._details)
        model = details.pop("model", None) or self._model
        if self._reasoning:
            details["reasoning"] = "".join(self._reasoning)
        tool_calls = self._tool_calls.calls()
        return ChatResponse(
            text="".join(self._text),
            finish_reason=self._finish_reason,
            usage=self._usage,
            model=model,
            backend=self._backend,
            latency=time.perf_counter() - self._started,
            tool_calls=tool_calls,
            details=details,
            logprobs=list(self._logprobs),
        )


class _Stream(Generic[D]):
    """What the sync and async streams share: the deltas they read, the reply they fold them into."""

    def __init__(
        self,
        deltas: D,
        *,
        model: str,
        backend: str,
        response_format: OutputFormat | None = None,
        settle: Callable[[ChatResponse], ChatResponse] | None = None,
    ) -> None:
        self._deltas: D = deltas
        self._acc = StreamAccumulator(model=model, backend=backend)
        self._format = response_format
        self._settle = settle

    @property
    def text(self) -> str:
        """The text received so far."""
        return self._acc.response().text

    def _final(self) -> ChatResponse:
        """The whole reply, made whole by ``settle`` (tool calls checked), with ``parsed`` set where a
        format was asked for.
        """
        reply = self._acc.response()
        if self._settle is not None:
            reply = self._settle(reply)
        return reply if self._format is None or reply.tool_calls else self._format.attach(reply)


class ChatStream(_Stream[Iterator[StreamDelta]]):
    """A reply arriving piece by piece: iterate it for :class:`StreamDelta` pieces.

    Use it in a ``with`` block, or call :meth:`close`, to stop generation early and free the
    connection or model. :meth:`final` reads what is left and returns the whole reply.
    """

    def __iter__(self) -> Iterator[StreamDelta]:
        return self

    def __next__(self) -> StreamDelta:
        delta = next(self._deltas)
        self._acc.add(delta)
        return delta

    def final(self) -> ChatResponse:
        """Consume the rest of the stream and return the complete reply.

        With ``response_format``, the reply's ``parsed`` is set, or
        :class:`~llmclient.errors.StructuredOutputError` is raised, as for a non-streamed call.
        """
        for _ in self:
            pass
        return self._final()

    def close(self) -> None:
        """Stop the stream; generation stops and its resources are released."""
        close = getattr(self._deltas, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncChatStream(_Stream[AsyncIterator[StreamDelta]]):
    """The async form of :class:`ChatStream`: ``async for delta in stream``."""

    def __aiter__(self) -> AsyncIterator[StreamDelta]:
        return self

    async def __anext__(self) -> StreamDelta:
        delta = await self._deltas.__anext__()
        self._acc.add(delta)
        return delta

    async def final(self) -> ChatResponse:
        """Consume the rest of the stream and return the complete reply (``parsed`` as in
        :meth:`ChatStream.final`).
        """
        async for _ in self:
            pass
        return self._final()

    async def aclose(self) -> None:
        """Stop the stream; generation stops and its resources are released."""
        aclose = getattr(self._deltas, "aclose", None)
        if aclose is not None:
            await aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
