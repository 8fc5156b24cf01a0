"""Where errors leave the backend: the key masked once there, and one async path for every client."""

from __future__ import annotations

import inspect
import logging

import httpx2
import pytest
from remote_support import API_KEY, Caller, Script

from llmclient.backends.openai import failures, wire
from llmclient.errors import AuthenticationError, InvalidRequestError, LLMClientError
from llmclient.testing.server import OpenAIHandler, Reply, completion_chunks, json_reply, sse_reply

ECHO = {"error": {"message": f"Incorrect API key provided: {API_KEY}", "code": f"bad_key_{API_KEY}"}}


def _everything(error: LLMClientError) -> str:
    return f"{error}\n{error!r}\n{error.args}\n{error.body}\n{dict(error.headers)}\n{error.provider_reason}"


def test_the_wire_codec_takes_no_secrets() -> None:
    for function in (
        wire.parse_completion,
        wire.parse_chunk,
        wire.load_event,
        failures.error_from_status,
        failures.error_from_payload,
    ):
        assert "secrets" not in inspect.signature(function).parameters, function.__name__


def test_an_echoed_key_is_masked_in_message_body_headers_and_retry_logs(
    serve, make_backend, call: Caller, caplog
) -> None:
    echoed = [("X-Echo", f"Bearer {API_KEY}")]
    server = serve(
        Script([json_reply(ECHO, status=503, headers=echoed), json_reply(ECHO, status=401, headers=echoed)])
    )
    with caplog.at_level(logging.DEBUG, logger="llmclient"), pytest.raises(AuthenticationError) as info:
        call.chat(make_backend(server))
    assert len(server.requests) == 2  # the 503 was retried, and logged
    assert "retrying in" in caplog.text
    assert API_KEY not in _everything(info.value) + caplog.text
    assert info.value.headers["x-echo"] == "Bearer ***"
    assert info.value.body["error"]["message"] == "Incorrect API key provided: ***"
    assert info.value.provider_reason == "bad_key_***"


def test_a_key_in_a_broken_reply_or_a_stream_error_is_masked(serve, make_backend, call: Caller) -> None:
    mid = {"error": {"code": 400, "message": f"bad key {API_KEY}"}}
    server = serve(
        Script(
            [
                Reply(headers=[("content-type", "application/json")], body=f"not json {API_KEY}".encode()),
                sse_reply([*completion_chunks("partial")[:2], mid]),
            ]
        )
    )
    backend = make_backend(server)
    with pytest.raises(LLMClientError) as broken:
        call.chat(backend)
    with pytest.raises(InvalidRequestError) as streamed:
        call.stream(backend)
    for error in (broken.value, streamed.value):
        assert API_KEY not in _everything(error)
        assert "***" in str(error)


def test_a_user_async_client_is_the_same_one_async_path(serve, make_backend, runner) -> None:
    server = serve(OpenAIHandler(text="through your client"))
    client = httpx2.AsyncClient(headers={"x-client": "mine"})
    backend = make_backend(server, async_http_client=client)

    async def both() -> tuple[str, str]:
        reply = await backend.achat("Hi")
        final = await backend.astream("Hi").final()
        return reply.text, final.text

    assert runner.run(both()) == ("through your client", "through your client")
    assert [r.headers["x-client"] for r in server.requests] == ["mine", "mine"]
    assert server.requests[-1].headers["authorization"] == f"Bearer {API_KEY}"
    runner.run(backend.aclose())
    assert not client.is_closed  # the client is the caller's
    runner.run(client.aclose())
