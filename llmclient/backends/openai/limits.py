"""The time limits of one attempt: a total deadline, and for streams an idle limit between events.

``timeout`` bounds each read, so a server that trickles a byte (or an SSE comment such as
OpenRouter's ``: OPENROUTER PROCESSING``) now and then would keep a call waiting forever. The
deadline bounds the whole attempt; the idle limit bounds the time between stream events, which
comments do not reset. Once a stream's finish reason has come, the rest (usage, ``[DONE]``) is
waited for only a short grace period: the reply is whole, and a server that leaves the connection
open must not cost it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

from llmclient.errors import TimeoutError

T = TypeVar("T")

GRACE = 1.0
"""Seconds a finished stream waits for its usage chunk or ``[DONE]``."""


class AttemptLimits:
    """The clock of one attempt.

    Args:
        deadline: seconds the attempt may take in all.
        idle: seconds a stream may go without an event; ``None`` for a plain request.
    """

    def __init__(self, deadline: float, idle: float | None = None) -> None:
        self.deadline = deadline
        self.idle = idle
        now = time.monotonic()
        self._ends = now + deadline
        self._last_event = now

    def event(self) -> None:
        """A stream event (not a comment) has come."""
        self._last_event = time.monotonic()

    def seconds_left(self, *, finished: bool = False) -> float:
        """Seconds the next read may wait: to the deadline, the idle limit, or the grace period."""
        now = time.monotonic()
        left = self._ends - now
        if self.idle is not None:
            left = min(left, self._last_event + self.idle - now)
        if finished:
            left = min(left, GRACE)
        return max(left, 0.0)

    def check(self) -> None:
        """Raise the :class:`TimeoutError` of the limit that has passed, if one has (once per
        streamed chunk, so one clock read and two comparisons).
        """
        now = time.monotonic()
        if now >= self._ends or (self.idle is not None and now >= self._last_event + self.idle):
            raise self.expired()

    def expired(self) -> TimeoutError:
        """The error for a limit that has passed (the deadline, else the idle limit)."""
        if time.monotonic() >= self._ends:
            return TimeoutError(
                f"no complete reply within the deadline of {self.deadline:g}s (the server kept sending "
                f"a little, or nothing); raise the backend's deadline setting for long generations"
            )
        return TimeoutError(
            f"the stream sent no event for {self.idle:g}s (keep-alive comments do not count); raise "
            f"stream_idle_timeout if the model is slow to start"
        )


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """``awaitable``, or ``asyncio.TimeoutError`` after ``seconds``."""
    timeout = getattr(asyncio, "timeout", None)  # Python 3.11+: no task per wait
    if timeout is None:
        return await asyncio.wait_for(awaitable, seconds)
    async with timeout(seconds):
        return await awaitable
