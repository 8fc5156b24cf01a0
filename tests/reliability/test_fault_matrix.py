"""Every fault a real API produces, sync and async, streamed and not: success after retries or the
documented typed error, within a time bound, with no retry of what must not be retried.

The table in docs/reliability.md is this matrix.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from llmclient.backends.openai import OpenAICompatibleBackend
from llmclient.errors import LLMClientError
from llmclient.retry import RetryPolicy
from llmclient.testing.server import LoopbackServer
from llmclient.testing.server.faults import FAULTS, TEXT, FaultHandler

# fault -> (outcome of a plain request, outcome of a stream, requests the server sees), for a fault on
# the first request followed by normal replies. "ok" means the call succeeded after retrying.
ONCE: dict[str, tuple[str, str, tuple[int, int]]] = {
    "rate_limit_seconds": ("ok", "ok", (2, 2)),
    "rate_limit_date": ("ok", "ok", (2, 2)),
    "rate_limit_openrouter": ("ok", "ok", (2, 2)),
    "server_500": ("ok", "ok", (2, 2)),
    "server_502": ("ok", "ok", (2, 2)),
    "server_503": ("ok", "ok", (2, 2)),
    "reset_before_body": ("ok", "BackendUnavailableError", (2, 1)),
    "reset_mid_body": ("ok", "BackendUnavailableError", (2, 1)),
    "stream_cut": ("MalformedResponseError", "BackendUnavailableError", (1, 1)),
    "stall": ("ok", "TimeoutError", (2, 1)),
    "error_in_200": ("ok", "BackendUnavailableError", (2, 1)),
    "bad_request_in_200": ("InvalidRequestError", "InvalidRequestError", (1, 1)),
    "malformed": ("MalformedResponseError", "MalformedResponseError", (1, 1)),
    "large": ("ok", "ok", (1, 1)),
}

# The retryable faults, repeated on every request: the typed error after the last attempt.
ALWAYS: dict[str, str] = {
    "rate_limit_seconds": "RateLimitError",
    "rate_limit_openrouter": "RateLimitError",
    "server_503": "BackendUnavailableError",
    "reset_before_body": "BackendUnavailableError",
    "stall": "TimeoutError",
}

TIME_BOUND = 6.0  # seconds any cell may take: three attempts, a 0.5 s read timeout, waits of at most 1 s
POLICY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05, max_wait=2.0, jitter=0.0)


def test_the_matrix_covers_every_fault() -> None:
    assert set(ONCE) == set(FAULTS)


def _outcome(backend: OpenAICompatibleBackend, mode: str, stream: bool) -> tuple[str, Any]:
    async def run_async() -> Any:
        if stream:
            return await backend.astream("Why?").final()
        return await backend.achat("Why?")

    try:
        if mode == "async":
            reply = asyncio.run(run_async())
        else:
            reply = backend.stream("Why?").final() if stream else backend.chat("Why?")
    except LLMClientError as error:
        return type(error).__name__, error
    return "ok", reply


def _cell(script: list[str], repeat: bool, mode: str, stream: bool) -> tuple[str, Any, float, list[str]]:
    handler = FaultHandler(script, repeat=repeat)
    with LoopbackServer(handler) as server:
        # a 5.4 MB reply is built in the server's process before its first byte: 0.5 s is too tight
        # for that on a busy 2-core machine (it timed out once in CI and was retried)
        timeout = 2.0 if "large" in script else 0.5
        backend = OpenAICompatibleBackend(model="m", base_url=server.base_url, timeout=timeout, retry=POLICY)
        started = time.perf_counter()
        try:
            outcome, value = _outcome(backend, mode, stream)
        finally:
            elapsed = time.perf_counter() - started
            backend.close()
    return outcome, value, elapsed, handler.served


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("fault", sorted(ONCE))
def test_a_fault_then_normal_replies(fault: str, stream: bool, mode: str) -> None:
    plain, streamed, (plain_requests, stream_requests) = ONCE[fault]
    expected, requests = (streamed, stream_requests) if stream else (plain, plain_requests)
    outcome, value, elapsed, served = _cell([fault], False, mode, stream)
    assert outcome == expected, value
    assert len(served) == requests
    assert elapsed < TIME_BOUND
    if outcome == "ok" and fault != "large":
        assert value.text == TEXT
    if fault == "large":
        assert len(value.text) == 5_400_000


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("fault", sorted(ALWAYS))
def test_a_fault_on_every_request_ends_in_its_typed_error(fault: str, stream: bool, mode: str) -> None:
    outcome, value, elapsed, served = _cell([fault], True, mode, stream)
    retried_in_stream = ONCE[fault][1] == "ok"
    expected = ALWAYS[fault] if (not stream or retried_in_stream) else ONCE[fault][1]
    assert outcome == expected, value
    assert len(served) == (3 if (not stream or retried_in_stream) else 1)
    assert elapsed < TIME_BOUND
