"""Replies, streams and connection reuse of the OpenAI-compatible backend, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from remote_support import API_KEY, Caller, Script

from llmclient.testing.server import (
    OpenAIHandler,
    Reply,
    completion,
    completion_chunks,
    error_reply,
    json_reply,
    sse_reply,
)


def test_plain_reply_reads_text_finish_reason_usage_and_model(serve, make_backend, call: Caller) -> None:
    server = serve(OpenAIHandler(text="Paris is the capital.", prompt_tokens=7))
    reply = call.chat(make_backend(server), [{"role": "user", "content": "Capital of France?"}])
    assert reply.text == "Paris is the capital."
    assert reply.finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (7, 4, 11)
    assert reply.model == "test-model"
    assert reply.backend == "openai-compatible"
    assert reply.latency > 0


def test_request_body_carries_messages_and_parameters(serve, make_backend, call: Caller) -> None:
    server = serve(OpenAIHandler())
    backend = make_backend(server)
    call.chat(
        backend,
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
        max_new_tokens=12,
        temperature=0,
        top_p=0.5,
        top_k=3,
        stop="\n\n",
        seed=7,
        extra={"user": "u1"},
    )
    body = server.requests[-1].json()
    assert body == {
        "model": "test-model",
        "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
        "max_tokens": 12,
        "temperature": 0,
        "top_p": 0.5,
        "top_k": 3,
        "stop": ["\n\n"],
        "seed": 7,
        "user": "u1",
    }
    headers = server.requests[-1].headers
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["content-type"] == "application/json"


def test_unset_parameters_are_not_sent(serve, make_backend, call: Caller) -> None:
    server = serve(OpenAIHandler())
    call.chat(make_backend(server))
    assert set(server.requests[-1].json()) == {"model", "messages"}


def test_stream_joins_to_the_plain_reply_with_usage(serve, make_backend, call: Caller) -> None:
    text = "The quick brown fox jumps over the lazy dog, twice: ünïcödé ✓."
    server = serve(OpenAIHandler(text=text, prompt_tokens=9))
    backend = make_backend(server)
    plain = call.chat(backend)
    pieces, final = call.stream(backend)
    assert "".join(pieces) == plain.text == final.text == text
    assert len([p for p in pieces if p]) > 5
    assert final.finish_reason == plain.finish_reason == "stop"
    assert final.usage == plain.usage
    body = server.requests[-1].json()
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_stream_survives_events_split_anywhere(serve, make_backend, call: Caller) -> None:
    events = completion_chunks("split across every byte", pieces=4)
    wire = (
        b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events) + b"data: [DONE]\r\n\r\n"
    )
    reply = Reply(
        headers=[("content-type", "text/event-stream")],
        chunks=[wire[i : i + 7] for i in range(0, len(wire), 7)],
    )
    server = serve(Script([reply]))
    pieces, final = call.stream(make_backend(server))
    assert "".join(pieces) == final.text == "split across every byte"
    assert final.usage is not None and final.usage.completion_tokens == 4


def test_sse_comments_and_keepalives_are_skipped(serve, make_backend, call: Caller) -> None:
    reply = sse_reply(
        completion_chunks("kept alive"), extra_lines=[": OPENROUTER PROCESSING", "", ": ping", ""]
    )
    server = serve(Script([reply]))
    _, final = call.stream(make_backend(server))
    assert final.text == "kept alive"


def test_connections_are_reused_for_replies_and_streams(serve, make_backend, call: Caller) -> None:
    server = serve(OpenAIHandler(text="again and again"))
    backend = make_backend(server)
    for _ in range(5):
        call.chat(backend)
        call.stream(backend)
    assert len(server.requests) == 10
    assert server.connections_opened == 1


def test_stream_closed_early_stops_reading(serve, make_backend) -> None:
    server = serve(OpenAIHandler(text=" ".join(["word"] * 200), chunk_delay=0.005))
    backend = make_backend(server)
    with backend.stream("Hi") as s:
        first = [next(s).text for _ in range(3)]
    assert first[1:] == ["word", " word"]
    reply = backend.chat("Hi")  # the backend is still usable after an abandoned stream
    assert reply.text.startswith("word word")


def test_chat_many_keeps_input_order_and_bounds_concurrency(serve, make_backend) -> None:
    server = serve(OpenAIHandler(text=lambda body: body["messages"][0]["content"].upper(), latency=0.02))
    backend = make_backend(server)
    prompts = [f"prompt {i}" for i in range(40)]
    replies = backend.chat_many(prompts, concurrency=8)
    assert [r.text for r in replies] == [p.upper() for p in prompts]
    assert server.connections_opened <= 8


def test_chat_many_returns_errors_in_place_when_asked(serve, make_backend) -> None:
    def handler(request):
        content = request.json()["messages"][0]["content"]
        if content == "bad":
            return error_reply(400, "messages[0] is bad")
        return OpenAIHandler(text=content)(request)

    server = serve(handler)
    replies = make_backend(server).chat_many(["a", "bad", "c"], return_exceptions=True)
    assert replies[0].text == "a" and replies[2].text == "c"
    assert type(replies[1]).__name__ == "InvalidRequestError"


def test_async_calls_share_one_pool_across_event_loops(serve, make_backend) -> None:
    server = serve(OpenAIHandler(text="loop"))
    backend = make_backend(server)

    async def twice() -> list[str]:
        return [(await backend.achat("Hi")).text for _ in range(2)]

    assert asyncio.run(twice()) == ["loop", "loop"]
    assert asyncio.run(twice()) == ["loop", "loop"]  # a second loop gets its own session
    assert backend.chat_many(["Hi"] * 3)[0].text == "loop"


@pytest.mark.parametrize(
    "reply",
    [
        completion("Plain answer.", model="gpt-4o-mini-2024-07-18", prompt_tokens=11),
        completion("Cut", finish_reason="length"),
        completion("", finish_reason="content_filter"),
        completion(
            "",
            completion_tokens=12,
            choices=[
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                            }
                        ],
                    },
                }
            ],
        ),
    ],
    ids=["plain", "length", "content_filter", "tool_calls"],
)
def test_replies_read_as_the_openai_sdk_reads_them(serve, make_backend, reply) -> None:
    server = serve(Script([json_reply(reply)]))
    ours = make_backend(server).chat("Hi")
    sdk = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0)
    theirs = sdk.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "Hi"}])
    sdk.close()
    assert ours.text == (theirs.choices[0].message.content or "")
    assert ours.finish_reason == theirs.choices[0].finish_reason
    assert ours.model == theirs.model
    assert ours.usage is not None and theirs.usage is not None
    assert (ours.usage.prompt_tokens, ours.usage.completion_tokens, ours.usage.total_tokens) == (
        theirs.usage.prompt_tokens,
        theirs.usage.completion_tokens,
        theirs.usage.total_tokens,
    )
    sdk_calls = [c.model_dump() for c in theirs.choices[0].message.tool_calls or []]
    assert [c.to_dict() for c in ours.tool_calls] == sdk_calls
    assert server.requests[0].json()["messages"] == server.requests[1].json()["messages"]


def test_concurrency_above_the_connection_limit_is_warned_about(serve, make_backend, caplog) -> None:
    server = serve(OpenAIHandler(text="ok"))
    backend = make_backend(server, max_connections=2)
    with caplog.at_level("WARNING", logger="llmclient"):
        replies = backend.chat_many(["a"] * 6, concurrency=4)
    assert [r.text for r in replies] == ["ok"] * 6
    assert "concurrency=4 is above max_connections=2" in caplog.text
    assert server.connections_opened <= 2


def test_compressed_replies_are_read(serve, make_backend, call: Caller) -> None:
    import gzip

    body = gzip.compress(json.dumps(completion("squeezed and restored")).encode())
    server = serve(
        Script(
            [Reply(headers=[("Content-Type", "application/json"), ("Content-Encoding", "gzip")], body=body)]
        )
    )
    assert call.chat(make_backend(server)).text == "squeezed and restored"
