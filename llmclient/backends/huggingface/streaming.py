"""Streaming a local reply: a stream job submitted like every call, its tokens decoded as they arrive.

transformers' ``TextIteratorStreamer`` decodes the whole reply again for every token; here each token
is decoded with a few tokens of context (the prefix-window method of text-generation-inference), so
streaming costs about what plain ``generate`` does. Text is released only when it is whole: a token
that ends inside a multi-byte character (UTF-8 or byte-fallback pieces) waits for the rest, and text
that may be the start of a stop string waits until it is clear that it is not.

Errors raised inside ``generate`` reach the consumer as the handle's result instead of leaving it
waiting (transformers issue 22576). Closing the stream cancels its handle: the row tracker stops the
row at the next step, and ``close()`` returns once the worker has let go, so the model is free again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Iterator
from typing import TYPE_CHECKING, Any

from llmclient.backends.huggingface.generation import Job, Outcome
from llmclient.stops import find_stop, held_back
from llmclient.types import StreamDelta, Usage

if TYPE_CHECKING:
    from llmclient.backends.huggingface.engine import Engine

logger = logging.getLogger("llmclient")


class IncrementalDecoder:
    """Decodes a growing list of token ids, returning only the text each addition completes."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def add(self, ids: list[int]) -> str:
        """Take new ids; return the text they complete (empty while a character is unfinished)."""
        self._ids.extend(ids)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before) :]
        return ""

    def _decode(self, ids: list[int]) -> str:
        text: str = self._tokenizer.decode(ids, skip_special_tokens=True)
        return text


class StreamText:
    """The text of a reply as it may be shown: whole characters, never part of a stop string."""

    def __init__(self, tokenizer: Any, stops: tuple[str, ...]) -> None:
        self._decoder = IncrementalDecoder(tokenizer)
        self._stops = stops
        self._longest = max(map(len, stops), default=0)
        self._text = ""
        self._sent = 0
        self._stopped = False

    def feed(self, ids: list[int]) -> str:
        """Take new token ids; return the text that is now safe to show."""
        self._text += self._decoder.add(ids)
        if self._stopped:
            return ""
        limit = len(self._text)
        if self._stops:
            cut = find_stop(self._text, self._stops, start=max(0, self._sent - self._longest))
            if cut is not None:
                limit, self._stopped = cut, True
            else:
                limit -= held_back(self._text, self._stops)
        piece = self._text[self._sent : limit]
        self._sent = max(self._sent, limit)
        return piece

    def finish(self, final_text: str) -> str:
        """What is left to show once the whole reply is known, so the joined stream equals it."""
        shown = self._text[: self._sent]
        if not final_text.startswith(shown):
            logger.warning("streamed text %r is not a prefix of the reply %r", shown, final_text)
            return ""
        return final_text[len(shown) :]

    def last(self, outcome: Outcome, model_name: str) -> StreamDelta:
        """The stream's last delta: the rest of the text, the finish reason and the usage."""
        return StreamDelta(
            text=self.finish(outcome.text),
            finish_reason=outcome.finish_reason,
            usage=Usage(prompt_tokens=outcome.prompt_tokens, completion_tokens=len(outcome.token_ids)),
            details={"model": model_name},
        )


def stream(engine: Engine, job: Job, model_name: str) -> Iterator[StreamDelta]:
    """Stream ``job``'s reply, submitted on the first ``next``; closing the iterator stops generation
    and returns once the model is free.
    """
    (handle,) = engine.scheduler.submit([job], stream=True)
    text = StreamText(engine.tokenizer, job.stop)
    try:
        for ids in handle.tokens():
            if piece := text.feed(ids):
                yield StreamDelta(text=piece)
        yield text.last(handle.result(), model_name)
    finally:
        handle.close()


async def astream(engine: Engine, job: Job, model_name: str) -> AsyncGenerator[StreamDelta, None]:
    """Async :func:`stream`: the worker wakes the event loop for each token, no pump thread."""
    (handle,) = engine.scheduler.submit([job], stream=True, gather=asyncio.get_running_loop())
    text = StreamText(engine.tokenizer, job.stop)
    try:
        async for ids in handle.atokens():
            if piece := text.feed(ids):
                yield StreamDelta(text=piece)
        yield text.last(await handle, model_name)
    finally:
        await handle.aclose()
