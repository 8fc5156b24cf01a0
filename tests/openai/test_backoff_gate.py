"""Issue 12 item 15: after a 429 the backend slows down as a whole, on one shared gate."""

from __future__ import annotations

import threading
import time

from llmclient.errors import RateLimitError
from llmclient.retry import BackoffGate, RetryPolicy
from llmclient.testing.server import OpenAIHandler, Reply, Request, error_reply


class Storm:
    """The first ``wave`` requests get a 429: the first with ``Retry-After: 1``, the rest ``0``."""

    def __init__(self, wave: int) -> None:
        self.wave = wave
        self.arrivals: list[float] = []
        self._lock = threading.Lock()
        self._ok = OpenAIHandler(text="ok")

    def __call__(self, request: Request) -> Reply:
        with self._lock:
            self.arrivals.append(time.monotonic())
            index = len(self.arrivals)
        if index <= self.wave:
            wait = "1" if index == 1 else "0"
            return error_reply(429, "slow down", code="rate_limit_exceeded", headers=[("Retry-After", wait)])
        return self._ok(request)


def test_every_request_waits_for_the_longest_retry_after(serve, make_backend, call) -> None:
    storm = Storm(wave=8)
    backend = make_backend(serve(storm), retry=RetryPolicy(max_attempts=4, initial_backoff=0.01, jitter=0))
    prompts = [f"p{i}" for i in range(8)]
    if call.mode == "sync":
        replies = backend.chat_many(prompts, concurrency=8)
    else:
        replies = call.runner.run(backend.achat_many(prompts, concurrency=8))
    assert [r.text for r in replies] == ["ok"] * 8
    first = storm.arrivals[0]
    retries = storm.arrivals[8:]
    assert len(retries) == 8  # one retry each, none sent while the gate was closed
    assert min(retries) - first >= 0.95, [round(t - first, 3) for t in retries]


def test_retry_after_zero_still_closes_the_gate_for_a_backoff() -> None:
    gate = BackoffGate()
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=8.0)
    gate.close_after(RateLimitError("429", retry_after=0.0), time.monotonic(), policy)
    assert 0.4 < gate.delay() <= 0.5
    # a second wave (requests sent after the gate opened) backs off longer
    gate.close_after(RateLimitError("429", retry_after=0.0), time.monotonic() + 1, policy)
    assert gate.delay() > 0.9
    gate.passed()
