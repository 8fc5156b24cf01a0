"""Streaming a local reply: ``generate`` on the model's worker thread, text decoded as tokens arrive.

transformers' ``TextIteratorStreamer`` decodes the whole reply again for every token; here each token
is decoded with a few tokens of context (the prefix-window method of text-generation-inference), so
streaming costs about what plain ``generate`` does. Text is released only when it is whole: a token
that ends inside a multi-byte character (UTF-8 or byte-fallback pieces) waits for the rest, and text
that may be the start of a stop string waits until it is clear that it is not.

Errors raised inside ``generate`` are sent to the consumer instead of leaving it waiting (transformers
issue 22576). Closing the stream sets the job's cancel flag, which the row tracker turns into a stop at
the next step, and waits until the worker has finished with it, so the model is free again when
``close()`` returns.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from transformers.generation.streamers import BaseStreamer

from llmclient.backends._hf_generation import Job, Outcome, find_stop
from llmclient.backends._hf_worker import Pending
from llmclient.types import StreamDelta, Usage

if TYPE_CHECKING:
    from llmclient.backends._hf_engine import Engine

logger = logging.getLogger("llmclient")

Item = tuple[str, Any]
"""What the worker sends: ``("tokens", ids)``, ``("done", Outcome)`` or ``("error", exception)``."""


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
                limit -= _held_back(self._text, self._stops)
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


class TokenStreamer(BaseStreamer):
    """Hands each step's token to ``emit``; the first ``put`` (the prompt) is skipped."""

    def __init__(self, emit: Callable[[Item], None]) -> None:
        self._emit = emit
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        """Called by ``generate`` with the prompt first, then with each new token."""
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self._emit(("tokens", value.reshape(-1).tolist()))

    def end(self) -> None:
        """Called by ``generate`` when it is done; the worker sends the outcome after it."""


class StreamRun:
    """One streamed generation, queued on the model's worker thread, reporting to ``emit``."""

    def __init__(self, engine: Engine, job: Job, emit: Callable[[Item], None]) -> None:
        self._emit = emit
        self._pending = Pending(job, self._deliver, streamer=TokenStreamer(emit))
        engine.worker.submit([self._pending])

    def _deliver(self, outcome: Outcome | BaseException) -> None:
        self._emit(("error", outcome) if isinstance(outcome, BaseException) else ("done", outcome))

    def stop(self) -> None:
        """Stop generating at the next step and wait until the worker has let go of the model."""
        self._pending.cancel()


def stream(engine: Engine, job: Job, model_name: str) -> Iterator[StreamDelta]:
    """Stream ``job``'s reply; closing the iterator stops generation."""
    items: queue.SimpleQueue[Item] = queue.SimpleQueue()
    text = StreamText(engine.tokenizer, job.stop)
    run = StreamRun(engine, job, items.put)
    try:
        while True:
            deltas, done = _handle(items.get(), text, model_name)
            yield from deltas
            if done:
                return
    finally:
        run.stop()


async def astream(engine: Engine, job: Job, model_name: str) -> AsyncGenerator[StreamDelta, None]:
    """Async :func:`stream`: the worker hands items straight to the event loop, no pump thread."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[Item] = asyncio.Queue()

    def emit(item: Item) -> None:
        try:
            loop.call_soon_threadsafe(items.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            job.cancel.set()

    text = StreamText(engine.tokenizer, job.stop)
    run = StreamRun(engine, job, emit)
    try:
        while True:
            deltas, done = _handle(await items.get(), text, model_name)
            for delta in deltas:
                yield delta
            if done:
                return
    finally:
        await asyncio.shield(asyncio.to_thread(run.stop))


def _handle(item: Item, text: StreamText, model_name: str) -> tuple[list[StreamDelta], bool]:
    """The deltas one worker item gives, and whether the stream is over."""
    kind, value = item
    if kind == "tokens":
        piece = text.feed(value)
        return ([StreamDelta(text=piece)] if piece else []), False
    if kind == "error":
        raise value
    outcome: Outcome = value
    usage = Usage(prompt_tokens=outcome.prompt_tokens, completion_tokens=len(outcome.token_ids))
    last = StreamDelta(
        text=text.finish(outcome.text),
        finish_reason=outcome.finish_reason,
        usage=usage,
        details={"model": model_name},
    )
    return [last], True


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that is the start of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest
