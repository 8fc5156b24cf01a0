"""One retry policy for every backend: what is retried, how long to wait, when to give up.

Retried: errors whose class says ``retryable`` (rate limits, 5xx, connection failures, timeouts).
Never retried: bad requests, authentication, context-window errors. A server's ``Retry-After`` is
honoured; one above ``max_wait`` ends the retries at once rather than waiting less than asked.
A backend may share one :class:`BackoffGate` between all its requests: after a 429, every request
waits on it (the longest ``Retry-After`` asked, and at least a backoff that grows while 429s keep
coming), so a storm of rate limits slows the backend as a whole rather than each request alone.
A :class:`RequestRate` caps request starts per minute; inside :func:`retries_paced_by`, every retry
takes its slot from it too (the batch runner's ``--rpm``), so retries never push a run past its cap.

:class:`RetryPolicy` is also the settings class of the ``retry`` table in ``llmclient.toml``
(``retry = { max_attempts = 5, max_wait = 60 }``): its fields are declared here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from llmclient._settings import Settings
from llmclient.errors import LLMClientError, RateLimitError

if TYPE_CHECKING:
    import tenacity

T = TypeVar("T")

logger = logging.getLogger("llmclient")


@dataclass(frozen=True)
class RetryPolicy(Settings):
    """How a backend retries failed requests: the ``retry`` table of a remote backend's settings.

    Attributes:
        max_attempts: tries in all, the first included (3: the openai SDK's two retries).
        initial_backoff: seconds before the first retry when the server gives no ``Retry-After``.
        max_backoff: the longest exponential backoff step, in seconds.
        max_wait: the longest single wait, in seconds (120, as the openai SDK); a ``Retry-After``
            above it stops retrying and raises the rate-limit error.
        max_total_wait: seconds from the first try after which no further retry starts.
        jitter: the fraction of each backoff added at random, so clients do not retry in step.
    """

    max_attempts: int = 3
    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    max_wait: float = 120.0
    max_total_wait: float = 300.0
    jitter: float = 0.25

    def problems(self) -> Iterator[tuple[str, str, str]]:
        """Out-of-range values: at least one attempt, and no negative (or NaN) wait or jitter."""
        if self.max_attempts < 1:
            yield "max_attempts", "must be at least 1 (the first try counts)", "Set 1 for no retries"
        for name in ("initial_backoff", "max_backoff", "max_wait", "max_total_wait", "jitter"):
            if not getattr(self, name) >= 0:
                yield name, "must be a number >= 0", f"Set {name} to 0 or more"

    def wait_for(self, error: BaseException, attempt: int) -> float:
        """Seconds to wait after ``attempt`` (counting from 1) failed with ``error``."""
        if isinstance(error, RateLimitError) and error.retry_after is not None:
            return float(error.retry_after)
        return self.backoff(attempt) * (1 + self.jitter * random.random())

    def backoff(self, attempt: int) -> float:
        """The exponential backoff after ``attempt`` (counting from 1) failures, without jitter."""
        return min(self.max_backoff, self.initial_backoff * 2.0 ** (attempt - 1))

    def should_retry(self, error: BaseException) -> bool:
        """Whether ``error`` is worth another try at all."""
        return isinstance(error, LLMClientError) and error.retryable

    def _controller(self) -> dict[str, object]:
        import tenacity

        def failure(state: tenacity.RetryCallState) -> BaseException:
            error = state.outcome.exception() if state.outcome is not None else None
            assert error is not None, "tenacity asks for a wait only after a failure"
            return error

        def wait(state: tenacity.RetryCallState) -> float:
            return self.wait_for(failure(state), state.attempt_number)

        def stop(state: tenacity.RetryCallState) -> bool:
            if state.attempt_number >= self.max_attempts:
                return True
            delay = self.wait_for(failure(state), state.attempt_number)
            elapsed = state.seconds_since_start or 0.0
            return delay > self.max_wait or elapsed + delay > self.max_total_wait

        def before_sleep(state: tenacity.RetryCallState) -> None:
            sleep = state.next_action.sleep if state.next_action is not None else 0.0
            logger.warning(
                "retrying in %.2fs after attempt %d/%d failed: %s",
                sleep,
                state.attempt_number,
                self.max_attempts,
                failure(state),
            )

        return {
            "retry": tenacity.retry_if_exception(self.should_retry),
            "wait": wait,
            "stop": stop,
            "before_sleep": before_sleep,
            "reraise": True,
        }

    def call(self, fn: Callable[[], T], gate: BackoffGate | None = None) -> T:
        """Call ``fn``, retrying as the policy says; the last error is raised as it was.

        With a ``gate``, every attempt first waits until the gate is open, and a 429 closes it for
        all the requests that share it.
        """
        if gate is not None:
            fn = gate.guard(fn, self)
        try:
            return fn()
        except LLMClientError as exc:
            if self.max_attempts == 1 or not self.should_retry(exc):
                raise
            first = exc
        import tenacity

        retrying = tenacity.Retrying(**self._controller())  # type: ignore[arg-type]
        return retrying(_replaying(first, fn))

    async def acall(self, fn: Callable[[], Awaitable[T]], gate: BackoffGate | None = None) -> T:
        """Async :meth:`call`."""
        if gate is not None:
            fn = gate.aguard(fn, self)
        try:
            return await fn()
        except LLMClientError as exc:
            if self.max_attempts == 1 or not self.should_retry(exc):
                raise
            first = exc
        import tenacity

        retrying = tenacity.AsyncRetrying(**self._controller())  # type: ignore[arg-type]
        return await retrying(_areplaying(first, fn))


class BackoffGate:
    """One backend's shared pause after a 429: every request waits until it opens.

    A 429 closes it for the longest ``Retry-After`` any request was given, and at least the
    policy's backoff for the number of 429 waves in a row (a wave: the 429s of requests sent
    since the gate last opened), so ``Retry-After: 0`` cannot start a storm. A success resets the
    count. Thread-safe; sync and async requests share it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until = 0.0
        self._wave_start = 0.0
        self._waves = 0

    def delay(self) -> float:
        """Seconds until the gate opens (0 when open)."""
        return max(0.0, self._until - time.monotonic())

    def close_after(self, error: RateLimitError, sent: float, policy: RetryPolicy) -> None:
        """A request sent at ``sent`` (monotonic) got ``error``: close the gate as it asks."""
        with self._lock:
            if sent >= self._wave_start:
                self._waves += 1
            asked = float(error.retry_after or 0.0)
            wait = min(max(asked, policy.backoff(self._waves)), policy.max_wait)
            self._until = max(self._until, time.monotonic() + wait)
            self._wave_start = self._until

    def passed(self) -> None:
        """A request succeeded: the next 429 starts counting waves from one again."""
        self._waves = 0

    def guard(self, fn: Callable[[], T], policy: RetryPolicy) -> Callable[[], T]:
        """``fn`` that waits for the gate first and closes it on a 429."""

        def attempt() -> T:
            while (wait := self.delay()) > 0:
                time.sleep(wait)
            sent = time.monotonic()
            try:
                result = fn()
            except RateLimitError as exc:
                self.close_after(exc, sent, policy)
                raise
            self.passed()
            return result

        return attempt

    def aguard(self, fn: Callable[[], Awaitable[T]], policy: RetryPolicy) -> Callable[[], Awaitable[T]]:
        """Async :meth:`guard`."""

        async def attempt() -> T:
            while (wait := self.delay()) > 0:
                await asyncio.sleep(wait)
            sent = time.monotonic()
            try:
                result = await fn()
            except RateLimitError as exc:
                self.close_after(exc, sent, policy)
                raise
            self.passed()
            return result

        return attempt


class RequestRate:
    """Spaces request starts so that at most ``per_minute`` begin in any minute.

    One object is shared by everything it paces: the rows of a run, and (inside
    :func:`retries_paced_by`) the retries of their requests. Safe from threads and event loops.
    """

    def __init__(self, per_minute: float | None) -> None:
        self._interval = 60.0 / per_minute if per_minute else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        """Take the next slot; the seconds to wait until it starts."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        return start - now

    async def wait(self) -> None:
        """Wait for a slot."""
        if self._interval and (delay := self._reserve()) > 0:
            await asyncio.sleep(delay)

    def wait_sync(self) -> None:
        """Wait for a slot, from sync code."""
        if self._interval and (delay := self._reserve()) > 0:
            time.sleep(delay)


_retry_rate: ContextVar[RequestRate | None] = ContextVar("llmclient_retry_rate", default=None)


@contextmanager
def retries_paced_by(rate: RequestRate) -> Iterator[None]:
    """Within this block (and the tasks it starts), every retry waits for a slot of ``rate``.

    The first attempt of a request is paced by whoever sends it (the batch runner waits for a slot
    before each row); the retries the policy makes take theirs here, from the same ``rate``.
    """
    token = _retry_rate.set(rate)
    try:
        yield
    finally:
        _retry_rate.reset(token)


def _replaying(first: BaseException, fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` whose first call re-raises the failure already seen, so tenacity counts it as attempt 1;
    every later call (a retry) first takes a slot of the :class:`RequestRate` in force, if any.
    """
    pending = [first]

    def attempt() -> T:
        if pending:
            raise pending.pop()
        if (rate := _retry_rate.get()) is not None:
            rate.wait_sync()
        return fn()

    return attempt


def _areplaying(first: BaseException, fn: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
    pending = [first]

    async def attempt() -> T:
        if pending:
            raise pending.pop()
        if (rate := _retry_rate.get()) is not None:
            await rate.wait()
        return await fn()

    return attempt
