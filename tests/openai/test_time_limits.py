"""Issue 12 items 11 and 12: a total deadline per attempt, an idle limit between stream events that
keep-alive comments do not reset, and a finished stream without ``[DONE]`` that still ends with its reply.
"""

from __future__ import annotations

import json
import time

import pytest
from remote_support import Caller

from llmclient.errors import TimeoutError
from llmclient.retry import RetryPolicy
from llmclient.testing.server import Reply, Request, completion_chunks

ONCE = RetryPolicy(max_attempts=1)
SSE = [("Content-Type", "text/event-stream")]


def _trickle(request: Request) -> Reply:
    """A byte every 0.2 s for a minute: comments in a stream, spaces in a plain reply (both legal)."""
    if request.json().get("stream"):
        return Reply(headers=SSE, chunks=[b": OPENROUTER PROCESSING\n\n"] * 300, chunk_delay=0.2)
    return Reply(headers=[("Content-Type", "application/json")], chunks=[b" "] * 300, chunk_delay=0.2)


def _events(text: str = "Hello there") -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in completion_chunks(text))


@pytest.mark.parametrize("stream", [False, True])
def test_a_trickling_server_meets_the_deadline(serve, make_backend, call: Caller, stream: bool) -> None:
    backend = make_backend(serve(_trickle), deadline=1.0, retry=ONCE)
    started = time.perf_counter()
    with pytest.raises(TimeoutError, match="deadline of 1s"):
        call.stream(backend) if stream else call.chat(backend)
    assert time.perf_counter() - started < 3.0


@pytest.mark.parametrize("stream", [False, True])
def test_a_silent_server_meets_the_deadline(serve, make_backend, call: Caller, stream: bool) -> None:
    server = serve(lambda request: Reply(headers=SSE, body=b"", delay=30.0))
    backend = make_backend(server, deadline=1.0, retry=ONCE)
    started = time.perf_counter()
    with pytest.raises(TimeoutError):
        call.stream(backend) if stream else call.chat(backend)
    assert time.perf_counter() - started < 3.0


def test_comments_do_not_keep_a_stream_alive(serve, make_backend, call: Caller) -> None:
    first = b"data: " + json.dumps(completion_chunks("Hi")[0]).encode() + b"\n\n"
    server = serve(
        lambda r: Reply(headers=SSE, chunks=[first] + [b": keep-alive\n\n"] * 300, chunk_delay=0.2)
    )
    backend = make_backend(server, stream_idle_timeout=0.8, deadline=30.0, retry=ONCE)
    started = time.perf_counter()
    with pytest.raises(TimeoutError, match=r"no event for 0\.8s"):
        call.stream(backend)
    assert time.perf_counter() - started < 3.0


def test_a_finished_stream_without_done_ends_with_its_reply(serve, make_backend, call: Caller) -> None:
    # every event, no [DONE], and the connection held open for 30 s more
    server = serve(lambda r: Reply(headers=SSE, chunks=[_events(), b": still here\n\n"], chunk_delay=30.0))
    backend = make_backend(server, stream_idle_timeout=2.0, retry=ONCE)
    started = time.perf_counter()
    _, reply = call.stream(backend)
    assert (reply.text, reply.finish_reason) == ("Hello there", "stop")
    assert reply.usage is not None
    # async: a one-second grace; sync reads on until the idle limit (its read timeout), then keeps the reply
    assert time.perf_counter() - started < (2.0 if call.mode == "async" else 4.0)


def test_a_finished_stream_without_usage_or_done_waits_only_the_grace(serve, make_backend, runner) -> None:
    events = b"".join(
        b"data: " + json.dumps(c).encode() + b"\n\n" for c in completion_chunks("Hi", include_usage=False)
    )
    server = serve(lambda r: Reply(headers=SSE, chunks=[events, b": x\n\n"], chunk_delay=30.0))
    backend = make_backend(server, retry=ONCE)
    started = time.perf_counter()
    assert runner.run(backend.astream("Hi").final()).text == "Hi"
    assert time.perf_counter() - started < 2.5
