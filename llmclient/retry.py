"""One retry policy for every backend: what is retried, how long to wait, when to give up.

Retried: errors whose class says ``retryable`` (rate limits, 5xx, connection failures, timeouts).
Never retried: bad requests, authentication, context-window errors. A server's ``Retry-After`` is
honoured; one above ``max_wait`` ends the retries at once rather than waiting less than asked.

:class:`RetryPolicy` is also the settings class of the ``retry`` table in ``llmclient.toml``
(``retry = { max_attempts = 5, max_wait = 60 }``): its fields are declared here and nowhere else.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Iterator
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
        backoff = min(self.max_backoff, self.initial_backoff * 2.0 ** (attempt - 1))
        return backoff * (1 + self.jitter * random.random())

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

    def call(self, fn: Callable[[], T]) -> T:
        """Call ``fn``, retrying as the policy says; the last error is raised as it was."""
        try:
            return fn()
        except LLMClientError as exc:
            if self.max_attempts == 1 or not self.should_retry(exc):
                raise
            first = exc
        import tenacity

        retrying = tenacity.Retrying(**self._controller())  # type: ignore[arg-type]
        return retrying(_replaying(first, fn))

    async def acall(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Async :meth:`call`."""
        try:
            return await fn()
        except LLMClientError as exc:
            if self.max_attempts == 1 or not self.should_retry(exc):
                raise
            first = exc
        import tenacity

        retrying = tenacity.AsyncRetrying(**self._controller())  # type: ignore[arg-type]
        return await retrying(_areplaying(first, fn))


def _replaying(first: BaseException, fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` whose first call re-raises the failure already seen, so tenacity counts it as attempt 1."""
    pending = [first]

    def attempt() -> T:
        if pending:
            raise pending.pop()
        return fn()

    return attempt


def _areplaying(first: BaseException, fn: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
    pending = [first]

    async def attempt() -> T:
        if pending:
            raise pending.pop()
        return await fn()

    return attempt
