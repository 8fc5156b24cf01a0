"""Issue 12 items 21, 22, 23 and 27: what real servers send that is not quite the API, read as meant."""

from __future__ import annotations

import json

import pytest
from remote_support import Caller

from llmclient.errors import (
    AuthenticationError,
    BackendUnavailableError,
    ContextWindowExceededError,
    InvalidRequestError,
    ProviderError,
)
from llmclient.retry import RetryPolicy
from llmclient.testing.server import (
    OpenAIHandler,
    Reply,
    completion,
    completion_chunks,
    json_reply,
    sse_reply,
)

ONCE = RetryPolicy(max_attempts=1)


@pytest.mark.parametrize("stream", [False, True])
def test_a_redirect_says_where_it_points_and_is_not_retried(
    serve, make_backend, call: Caller, stream
) -> None:
    where = "https://example.com/login"
    server = serve(lambda r: Reply(status=302, headers=[("Location", where), ("Content-Type", "text/html")]))
    backend = make_backend(server)
    with pytest.raises(ProviderError) as info:
        call.stream(backend) if stream else call.chat(backend)
    assert "redirect (HTTP 302" in str(info.value) and where in str(info.value)
    assert not info.value.retryable and len(server.requests) == 1


def test_an_html_page_for_a_stream_says_what_came_back(serve, make_backend, call: Caller) -> None:
    page = b"<!DOCTYPE html><html><title>Sign in</title></html>"
    server = serve(lambda r: Reply(headers=[("Content-Type", "text/html; charset=utf-8")], body=page))
    with pytest.raises(ProviderError) as info:
        call.stream(make_backend(server))
    message = str(info.value)
    assert "text/html" in message and "<!DOCTYPE html>" in message and "HTTP 200" in message
    assert "probably cut" not in message and not info.value.retryable


@pytest.mark.parametrize("stream", [False, True])
def test_one_invalid_utf8_byte_costs_one_character(serve, make_backend, call: Caller, stream) -> None:
    def reply(request):
        if stream:
            events = [json.dumps(c, ensure_ascii=False) for c in completion_chunks("café au lait")]
            body = b"".join(b"data: " + e.encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
            return Reply(
                headers=[("Content-Type", "text/event-stream")], body=body.replace(b"\xc3\xa9", b"\xe9")
            )
        body = json.dumps(completion("café au lait"), ensure_ascii=False).encode()
        return Reply(headers=[("Content-Type", "application/json")], body=body.replace(b"\xc3\xa9", b"\xe9"))

    backend = make_backend(serve(reply))
    text = call.stream(backend)[1].text if stream else call.chat(backend).text
    assert text == "caf\ufffd au lait"


@pytest.mark.parametrize("trimmed", [False, True])
def test_stop_strings_the_server_left_in_are_cut(serve, make_backend, call: Caller, trimmed) -> None:
    text = "Paris is lovely." if trimmed else "Paris is lovely.\nUser: and Rome?"
    backend = make_backend(serve(OpenAIHandler(text=text)))
    assert call.chat(backend, stop=["\nUser:"]).text == "Paris is lovely."
    pieces, reply = call.stream(backend, stop=["\nUser:"])
    assert reply.text == "".join(pieces) == "Paris is lovely."
    assert reply.finish_reason == "stop"


def test_a_stop_string_split_across_stream_pieces_is_held_back(serve, make_backend, call: Caller) -> None:
    chunks = completion_chunks("one two ##END## three", pieces=None)
    backend = make_backend(serve(lambda r: sse_reply(chunks)))
    pieces, reply = call.stream(backend, stop=["##END##"])
    assert reply.text == "one two "
    assert not any("#" in piece for piece in pieces)


def test_fastapi_detail_bodies_give_the_servers_message(serve, make_backend, call: Caller) -> None:
    missing = {"detail": [{"loc": ["body", "messages"], "msg": "Field required", "type": "missing"}]}
    server = serve(lambda r: json_reply(missing, status=422))
    with pytest.raises(InvalidRequestError) as info:
        call.chat(make_backend(server))
    assert "body.messages: Field required" in str(info.value) and "{" not in str(info.value)
    server = serve(lambda r: json_reply({"detail": "Not authenticated"}, status=401))
    with pytest.raises(AuthenticationError, match=r"\(HTTP 401\): Not authenticated\."):
        call.chat(make_backend(server))


@pytest.mark.parametrize(
    "event", ["data: upstream died: CUDA error\n\n", "event: error\ndata: overloaded\n\n"]
)
def test_a_non_json_error_event_gives_the_servers_message(serve, make_backend, call: Caller, event) -> None:
    first = "data: " + json.dumps(completion_chunks("Hi")[0]) + "\n\n"
    server = serve(
        lambda r: Reply(headers=[("Content-Type", "text/event-stream")], body=(first + event).encode())
    )
    with pytest.raises(
        BackendUnavailableError, match=r"error in the middle of the stream: (upstream died|overloaded)"
    ):
        call.stream(make_backend(server, retry=ONCE))


def test_litellm_context_errors_fill_the_window_and_prompt_size(serve, make_backend, call: Caller) -> None:
    message = (
        "litellm.ContextWindowExceededError: litellm.BadRequestError: HuggingfaceException - "
        "Max Input Tokens=8192, Got=8360"
    )
    server = serve(
        lambda r: json_reply({"error": {"message": message, "type": None, "code": "400"}}, status=400)
    )
    with pytest.raises(ContextWindowExceededError) as info:
        call.chat(make_backend(server))
    assert (info.value.context_window, info.value.prompt_tokens) == (8192, 8360)


def test_the_developer_role_is_sent_as_is_or_as_system(serve, make_backend) -> None:
    server = serve(OpenAIHandler(text="ok"))
    messages = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    for setting, sent in ((None, "developer"), ("system", "system")):
        options = {"developer_role": setting} if setting else {}
        make_backend(server, **options).chat(messages)
        assert server.requests[-1].json()["messages"][0]["role"] == sent
