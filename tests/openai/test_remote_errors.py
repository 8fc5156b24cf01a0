"""Errors and retries of the remote backend: every failure ends typed, retried only when it should."""

from __future__ import annotations

import email.utils
import logging
import time

import pytest
from remote_support import API_KEY, Caller, Script

from llmclient.errors import (
    AuthenticationError,
    BackendUnavailableError,
    ContextWindowExceededError,
    InvalidRequestError,
    MalformedResponseError,
    ProviderError,
    RateLimitError,
    TimeoutError,
)
from llmclient.retry import RetryPolicy
from llmclient.testing.server import (
    Reply,
    completion,
    completion_chunks,
    error_reply,
    json_reply,
    sse_reply,
)

OK = json_reply(completion("recovered"))

# Bodies as the real APIs returned them, quoted by users in public issues: context length from
# github.com/himanushi/chat-code/issues/17, the 429 from github.com/Pythagora-io/gpt-pilot/pull/53.
CONTEXT_400 = {
    "error": {
        "message": "This model's maximum context length is 4097 tokens. However, your messages resulted "
        "in 4363 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
RATE_429 = {
    "error": {
        "message": "Rate limit reached for gpt-4o-mini in organization org on tokens per min (TPM)",
        "type": "tokens",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}
SERVER_500 = {
    "error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}
OPENROUTER_200_ERROR = {"error": {"message": "Internal Server Error", "code": 500}, "user_id": "user_x"}
OPENROUTER_401 = {"error": {"message": "No auth credentials found", "code": 401}}
OPENROUTER_402 = {
    "error": {
        "message": "This request requires more credits, or fewer max_tokens.",
        "code": 402,
        "metadata": {"provider_name": None},
    }
}


def test_429_with_retry_after_is_retried_after_the_wait(serve, make_backend, call: Caller) -> None:
    server = serve(Script([json_reply(RATE_429, status=429, headers=[("Retry-After", "0.3")]), OK]))
    started = time.perf_counter()
    reply = call.chat(make_backend(server))
    assert reply.text == "recovered"
    assert time.perf_counter() - started >= 0.3
    assert len(server.requests) == 2


def test_retry_after_as_http_date_and_in_ms(serve, make_backend) -> None:
    date = email.utils.formatdate(time.time() + 1.2, usegmt=True)
    server = serve(
        Script(
            [
                json_reply(RATE_429, status=429, headers=[("Retry-After", date)]),
                json_reply(RATE_429, status=429, headers=[("retry-after-ms", "150"), ("Retry-After", "30")]),
                OK,
            ]
        )
    )
    started = time.perf_counter()
    assert make_backend(server).chat("Hi").text == "recovered"
    elapsed = time.perf_counter() - started
    assert 0.15 + 0.2 <= elapsed < 5  # the date (about 1 s, at second resolution) then 150 ms, not 30 s


def test_openrouter_429_reset_time_in_the_body_is_honoured(serve, make_backend) -> None:
    reset_ms = int((time.time() + 0.4) * 1000)
    body = {
        "error": {
            "message": "Rate limit exceeded: free-models-per-day",
            "code": 429,
            "metadata": {
                "headers": {
                    "X-RateLimit-Limit": "50",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(reset_ms),
                }
            },
        }
    }
    server = serve(Script([json_reply(body, status=429), OK]))
    started = time.perf_counter()
    assert make_backend(server).chat("Hi").text == "recovered"
    assert time.perf_counter() - started >= 0.3


def test_retry_after_longer_than_max_wait_raises_at_once(serve, make_backend, call: Caller) -> None:
    server = serve(Script([json_reply(RATE_429, status=429, headers=[("Retry-After", "3600")]), OK]))
    backend = make_backend(server, retry=RetryPolicy(max_wait=120))
    started = time.perf_counter()
    with pytest.raises(RateLimitError) as info:
        call.chat(backend)
    assert time.perf_counter() - started < 2
    assert info.value.retry_after == 3600
    assert info.value.status_code == 429
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_then_success_is_retried(serve, make_backend, call: Caller, status: int) -> None:
    server = serve(Script([json_reply(SERVER_500, status=status), OK]))
    assert call.chat(make_backend(server)).text == "recovered"
    assert len(server.requests) == 2


def test_retries_give_up_after_max_attempts_with_the_last_error(serve, make_backend, call: Caller) -> None:
    server = serve(Script([json_reply(SERVER_500, status=503)]))
    with pytest.raises(BackendUnavailableError) as info:
        call.chat(make_backend(server))
    assert info.value.status_code == 503
    assert "Sorry about that" in str(info.value)
    assert len(server.requests) == 3


def test_retries_are_logged(serve, make_backend, caplog) -> None:
    server = serve(Script([json_reply(SERVER_500, status=500), OK]))
    with caplog.at_level(logging.WARNING, logger="llmclient"):
        make_backend(server).chat("Hi")
    assert any("retrying in" in r.getMessage() and "1/3" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("status", "body"), [(401, OPENROUTER_401), (403, RATE_429 | {"error": {"message": "no"}})]
)
def test_401_and_403_are_not_retried(serve, make_backend, call: Caller, status, body) -> None:
    server = serve(Script([json_reply(body, status=status), OK]))
    with pytest.raises(AuthenticationError) as info:
        call.chat(make_backend(server))
    assert info.value.status_code == status
    assert "API key" in str(info.value)
    assert len(server.requests) == 1


def test_context_length_400_is_a_context_window_error_with_the_numbers(
    serve, make_backend, call: Caller
) -> None:
    server = serve(Script([json_reply(CONTEXT_400, status=400), OK]))
    with pytest.raises(ContextWindowExceededError) as info:
        call.chat(make_backend(server))
    error = info.value
    assert (error.context_window, error.prompt_tokens) == (4097, 4363)
    assert error.provider_reason == "context_length_exceeded"
    assert "max_new_tokens" in str(error)
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [400, 404, 422])
def test_bad_requests_are_not_retried(serve, make_backend, status: int) -> None:
    server = serve(
        Script([error_reply(status, "The model `nope` does not exist", code="model_not_found"), OK])
    )
    with pytest.raises(InvalidRequestError) as info:
        make_backend(server).chat("Hi")
    assert info.value.status_code == status
    assert len(server.requests) == 1


def test_error_inside_a_200_becomes_a_typed_error(serve, make_backend, call: Caller) -> None:
    server = serve(Script([json_reply(OPENROUTER_200_ERROR)]))
    with pytest.raises(BackendUnavailableError) as info:
        call.chat(make_backend(server))
    assert "Internal Server Error" in str(info.value)
    assert "inside an HTTP 200" in str(info.value)
    assert len(server.requests) == 3  # a 500 inside a 200 is retried like a 500


def test_openrouter_402_is_a_provider_error_with_its_reason(serve, make_backend) -> None:
    server = serve(Script([json_reply(OPENROUTER_402, status=402)]))
    with pytest.raises(ProviderError) as info:
        make_backend(server).chat("Hi")
    assert "more credits" in str(info.value)
    assert info.value.provider_reason == "402"


def test_error_in_the_middle_of_a_stream_is_typed(serve, make_backend, call: Caller) -> None:
    chunks = completion_chunks("partial answer")[:2]
    mid = {
        "error": {"code": 400, "message": "Token limit reached"},
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
    }
    server = serve(Script([sse_reply([*chunks, mid])]))
    with pytest.raises(InvalidRequestError, match="Token limit reached") as info:
        call.stream(make_backend(server))
    assert "middle of the stream" in str(info.value)


@pytest.mark.parametrize(
    "body", [b"<html>Bad gateway</html>", b'{"choices": ', b"[1, 2]", b'{"object": "x"}']
)
def test_malformed_reply_is_a_malformed_response_error(
    serve, make_backend, call: Caller, body: bytes
) -> None:
    server = serve(Script([Reply(headers=[("content-type", "application/json")], body=body)]))
    with pytest.raises(MalformedResponseError) as info:
        call.chat(make_backend(server))
    assert "base_url" in str(info.value)


def test_malformed_stream_event_is_a_malformed_response_error(serve, make_backend, call: Caller) -> None:
    server = serve(Script([sse_reply(["{not json"])]))
    with pytest.raises(MalformedResponseError, match="not valid JSON"):
        call.stream(make_backend(server))


def test_stream_cut_before_its_end_is_an_error(serve, make_backend, call: Caller) -> None:
    server = serve(Script([sse_reply(completion_chunks("cut short")[:3], done=False)]))
    with pytest.raises(BackendUnavailableError, match="ended before the reply was complete"):
        call.stream(make_backend(server))


def test_connection_reset_is_retried_then_reported(serve, make_backend, call: Caller) -> None:
    server = serve(Script([Reply(body=b"x" * 100, reset_before_body=True)]))
    with pytest.raises(BackendUnavailableError):
        call.chat(make_backend(server))
    assert len(server.requests) == 3


def test_slow_server_times_out(serve, make_backend, call: Caller) -> None:
    server = serve(Script([json_reply(completion("late"), delay=2.0)]))
    backend = make_backend(server, timeout=0.2, retry=RetryPolicy(max_attempts=1))
    started = time.perf_counter()
    with pytest.raises(TimeoutError, match="timed out"):
        call.chat(backend)
    assert time.perf_counter() - started < 1.5


def test_unreachable_server_is_backend_unavailable(make_backend, call: Caller) -> None:
    class Nowhere:
        base_url = "http://127.0.0.1:9/v1"

    with pytest.raises(BackendUnavailableError, match="failed"):
        call.chat(make_backend(Nowhere(), retry=RetryPolicy(max_attempts=1)))


def test_api_key_never_appears_in_errors_or_logs(serve, make_backend, call: Caller, caplog) -> None:
    echo = {"error": {"message": f"Incorrect API key provided: {API_KEY}", "code": "invalid_api_key"}}
    server = serve(Script([json_reply(SERVER_500, status=500), json_reply(echo, status=401)]))
    backend = make_backend(server)
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthenticationError) as info:
        call.chat(backend)
    error = info.value
    produced = [str(error), repr(error), str(error.body), repr(backend), caplog.text]
    assert all(API_KEY not in text for text in produced)
    assert "***" in str(error)
