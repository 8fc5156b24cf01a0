"""Stop strings: where one begins, and how much of a stream's tail could still become one.

The text of a reply excludes the stop sequence that ended it, on every backend. The local backend
finds stop strings in what it decodes; some servers return them anyway (``transformers serve``
halts after the token that completes one; LiteLLM forwards that), so the remote backend cuts the
reply at the first stop string too. Streams hold back the end of the text that could still become
one. Pure functions over strings, shared by both backends.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

from llmclient.types import StreamDelta


def find_stop(text: str, stops: Sequence[str], start: int = 0) -> int | None:
    """Where the earliest stop string begins in ``text`` (searching from ``start``), or ``None``."""
    found = [i for i in (text.find(s, start) for s in stops if s) if i >= 0]
    return min(found) if found else None


def held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that is the start of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class StopCutter:
    """Cuts streamed text at the first stop string, holding back what could begin one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.stopped = False
        self._held = ""

    def feed(self, text: str) -> str:
        """The part of ``text`` that can be shown now; nothing once a stop string was seen."""
        if self.stopped or not text:
            return ""
        text = self._held + text
        at = find_stop(text, self.stops)
        if at is not None:
            self.stopped, self._held = True, ""
            return text[:at]
        keep = held_back(text, self.stops)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """What was held back, at the end of the reply (it did not become a stop string)."""
        held, self._held = self._held, ""
        return held

    def deltas(self, deltas: Iterable[StreamDelta], *, last: bool = False) -> Iterator[StreamDelta]:
        """``deltas`` with their text cut at the first stop string; the held-back text is given
        with the finish reason (or at the ``last`` batch), and deltas left empty are dropped.
        """
        if not self.stops:
            yield from deltas
            return
        for delta in deltas:
            text = self.feed(delta.text)
            if delta.finish_reason is not None:
                text += self.flush()
            if text or delta.finish_reason or delta.usage or delta.details:
                finish = "stop" if self.stopped and delta.finish_reason else delta.finish_reason
                yield replace(delta, text=text, finish_reason=finish)
        if last and (held := self.flush()):
            yield StreamDelta(text=held)
