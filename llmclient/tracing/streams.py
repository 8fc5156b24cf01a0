"""Streams watched for their call: usage priced, the first chunk's time, the whole reply at the end."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from llmclient.cost import Prices, priced_usage
from llmclient.tracing.calls import call
from llmclient.types import ChatRequest, StreamDelta

if TYPE_CHECKING:
    from llmclient.backend import ChatBackend


class _StreamWatch:
    """What a stream's deltas say, for its call: the first chunk's time, then the whole reply."""

    def __init__(self, backend: ChatBackend, request: ChatRequest, prices: Prices | None) -> None:
        self.call = call(backend, request, current=False)
        self._prices = prices
        self._model = backend.model
        self._deltas: list[StreamDelta] = []
        self._keep = self.call.active

    def see(self, delta: StreamDelta) -> StreamDelta:
        if self._prices is not None and delta.usage is not None:
            usage = priced_usage(delta.usage, self._prices)
            if usage is not delta.usage:
                delta = replace(delta, usage=usage)
        if self._keep:
            if not self._deltas:
                self.call.first_chunk = time.perf_counter() - self.call._started
            self._deltas.append(delta)
        return delta

    def finish(self, error: BaseException | None) -> None:
        if not self._keep:
            return
        from llmclient.stream import StreamAccumulator

        accumulated = StreamAccumulator(model=self._model, backend="")
        for delta in self._deltas:
            accumulated.add(delta)
        self.call.end(error, accumulated.response() if error is None else None)


def watched(
    deltas: Iterator[StreamDelta], backend: ChatBackend, request: ChatRequest, prices: Prices | None
) -> Iterator[StreamDelta]:
    """``deltas`` with their usage priced and the stream's call recorded (started on first read)."""
    watch = _StreamWatch(backend, request, prices)
    error: BaseException | None = None
    try:
        for delta in deltas:
            yield watch.see(delta)
    except GeneratorExit:  # closed early by its reader: not a failure
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        close = getattr(deltas, "close", None)
        if close is not None:
            close()
        watch.finish(error)


async def awatched(
    deltas: AsyncIterator[StreamDelta], backend: ChatBackend, request: ChatRequest, prices: Prices | None
) -> AsyncIterator[StreamDelta]:
    """Async :func:`watched`."""
    watch = _StreamWatch(backend, request, prices)
    error: BaseException | None = None
    try:
        async for delta in deltas:
            yield watch.see(delta)
    except GeneratorExit:
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        aclose = getattr(deltas, "aclose", None)
        if aclose is not None:
            await aclose()
        watch.finish(error)
