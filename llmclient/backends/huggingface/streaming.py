"""Streaming a local reply: a stream job submitted like every call, its tokens decoded as they arrive.

transformers' ``TextIteratorStreamer`` decodes the whole reply again for every token; here each token
is decoded with a few tokens of context (the prefix-window method of text-generation-inference), so
streaming costs about what plain ``generate`` does. Text is released only when it is whole: a token
that ends inside a multi-byte character (UTF-8 or byte-fallback pieces) waits for the rest, and text
that may be the start of a stop string waits until it is clear that it is not.

With ``logprobs``, each delta carries the entries of the tokens whose text it releases (a token
held back with its text waits with it), and the last delta the rest, so the stream's joined entries
equal ``chat``'s.

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
from llmclient.backends.huggingface.logprobs import TokenTexts
from llmclient.logprobs import TokenLogprob
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
        self._take(ids)
        if self._stopped:
            return ""
        limit = self._safe_end()
        piece = self._text[self._sent : limit]
        self._sent = max(self._sent, limit)
        return piece

    def _take(self, ids: list[int]) -> None:
        """Add the text of new token ids."""
        self._text += self._decoder.add(ids)

    def _safe_end(self) -> int:
        """Where the text that may be shown ends: before a stop string, or what could begin one."""
        limit = len(self._text)
        if self._stops:
            cut = find_stop(self._text, self._stops, start=max(0, self._sent - self._longest))
            if cut is not None:
                limit, self._stopped = cut, True
            else:
                limit -= held_back(self._text, self._stops)
        return limit

    def finish(self, final_text: str) -> str:
        """What is left to show once the whole reply is known, so the joined stream equals it."""
        shown = self._text[: self._sent]
        if not final_text.startswith(shown):
            logger.warning("streamed text %r is not a prefix of the reply %r", shown, final_text)
            return ""
        return final_text[len(shown) :]

    def last(
        self, outcome: Outcome, model_name: str, logprobs: list[TokenLogprob] | None = None
    ) -> StreamDelta:
        """The last delta: the rest of the text (and its logprobs), the finish reason and the usage."""
        return StreamDelta(
            text=self.finish(outcome.text),
            finish_reason=outcome.finish_reason,
            usage=Usage(prompt_tokens=outcome.prompt_tokens, completion_tokens=len(outcome.token_ids)),
            details={"model": model_name},
            logprobs=logprobs or [],
        )


class StreamLogprobs:
    """The logprob entries of a stream's tokens, handed out with the text they belong to.

    The worker appends each token's step to the job before the reader is handed the token, so the
    steps of every token read are there.
    """

    def __init__(self, texts: TokenTexts, job: Job) -> None:
        self._texts = texts
        self._steps = job.steps
        self._wanted = job.top_logprobs is not None
        self._seen = 0
        self._sent = 0

    def feed(self, ids: list[int]) -> None:
        """Count the tokens read."""
        self._seen += len(ids)

    def take(self) -> list[TokenLogprob]:
        """The entries of the tokens read since the last take (none where logprobs were not asked)."""
        if not self._wanted:
            return []
        entries = self._texts.entries(self._steps[self._sent : self._seen])
        self._sent = max(self._sent, self._seen)
        return entries

    def rest(self, outcome: Outcome) -> list[TokenLogprob]:
        """The entries of the reply's tokens not yet handed out (the end-of-sequence token left out)."""
        return self._texts.entries(outcome.steps[self._sent :])


def _text_of(engine: Engine, job: Job) -> StreamText:
    """The stream's text: plain, or text up to a tool call where the job has tools (:mod:`.toolstream`)."""
    if job.tools is None:
        return StreamText(engine.tokenizer, job.stop)
    from llmclient.backends.huggingface.toolstream import ToolStreamText

    return ToolStreamText(engine.tokenizer, job)


def stream(engine: Engine, job: Job, model_name: str) -> Iterator[StreamDelta]:
    """Stream ``job``'s reply, submitted on the first ``next``; closing the iterator stops generation
    and returns once the model is free.
    """
    (handle,) = engine.scheduler.submit([job], stream=True)
    text = _text_of(engine, job)
    marks = StreamLogprobs(engine.texts, job)
    try:
        for ids in handle.tokens():
            marks.feed(ids)
            if piece := text.feed(ids):
                yield StreamDelta(text=piece, logprobs=marks.take())
        outcome = handle.result()
        yield text.last(outcome, model_name, marks.rest(outcome))
    finally:
        handle.close()


async def astream(engine: Engine, job: Job, model_name: str) -> AsyncGenerator[StreamDelta, None]:
    """Async :func:`stream`: the worker wakes the event loop for each token, no pump thread."""
    (handle,) = engine.scheduler.submit([job], stream=True, gather=asyncio.get_running_loop())
    text = _text_of(engine, job)
    marks = StreamLogprobs(engine.texts, job)
    try:
        async for ids in handle.atokens():
            marks.feed(ids)
            if piece := text.feed(ids):
                yield StreamDelta(text=piece, logprobs=marks.take())
        outcome = await handle
        yield text.last(outcome, model_name, marks.rest(outcome))
    finally:
        await handle.aclose()
