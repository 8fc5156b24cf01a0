"""FunctionBackend: a function's replies through every call style, sync and async functions, text,
replies, pieces and errors, and the requests it saw."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from llmclient import ChatResponse, InvalidRequestError, Message, RateLimitError, Usage
from llmclient.testing import FunctionBackend
from llmclient.types import GenerationParams, StreamDelta


def shout(messages: list[Message], params: GenerationParams) -> str:
    return f"{messages[-1].content}!".upper()


async def ashout(messages: list[Message], params: GenerationParams) -> str:
    await asyncio.sleep(0)
    return shout(messages, params)


def pieces(messages: list[Message], params: GenerationParams) -> Iterator[str]:
    yield from ["a", "b", "c"]


async def apieces(messages: list[Message], params: GenerationParams) -> AsyncIterator[str]:
    for piece in ["a", "b", "c"]:
        await asyncio.sleep(0)
        yield piece


@pytest.mark.parametrize("function", [shout, ashout], ids=["sync", "async"])
def test_text_replies_in_every_call_style(function: object) -> None:
    backend = FunctionBackend(function, model="m", name="fn")  # type: ignore[arg-type]
    reply = backend.chat("hi")
    assert (reply.text, reply.finish_reason, reply.model, reply.backend) == ("HI!", "stop", "m", "fn")
    assert asyncio.run(backend.achat("yo")).text == "YO!"
    stream = backend.stream("st")
    assert [d.text for d in stream] == ["ST!"] and stream.final().finish_reason == "stop"

    async def astream() -> list[str]:
        return [d.text async for d in backend.astream("as")]

    assert asyncio.run(astream()) == ["AS!"]
    assert [r.text for r in backend.chat_many(["a", "b"], concurrency=2)] == ["A!", "B!"]
    many = asyncio.run(backend.achat_many(["c", "d"]))
    assert [r.text for r in many] == ["C!", "D!"]
    assert [r.messages[-1].content for r in backend.requests] == ["hi", "yo", "st", "as", "a", "b", "c", "d"]
    backend.close()


@pytest.mark.parametrize("function", [pieces, apieces], ids=["sync", "async"])
def test_pieces_stream_one_delta_each_and_join_for_a_plain_call(function: object) -> None:
    backend = FunctionBackend(function)  # type: ignore[arg-type]
    deltas = list(backend.stream("x"))
    assert [d.text for d in deltas] == ["a", "b", "c", ""]
    assert deltas[-1].finish_reason == "stop"  # closed by a finish reason, as a real stream

    async def astream() -> list[str]:
        return [d.text async for d in backend.astream("x")]

    assert asyncio.run(astream()) == ["a", "b", "c", ""]
    assert backend.chat("x").text == "abc"
    assert asyncio.run(backend.achat("x")).text == "abc"
    assert [r.text for r in backend.chat_many(["x", "y"])] == ["abc", "abc"]


def test_a_reply_or_deltas_are_returned_as_given() -> None:
    usage = Usage(prompt_tokens=3, completion_tokens=2)
    whole = ChatResponse(text="done", finish_reason="length", usage=usage)
    backend = FunctionBackend(lambda messages, params: whole, model="m")
    reply = backend.chat("x")
    assert (reply.text, reply.finish_reason, reply.usage, reply.model) == ("done", "length", usage, "m")
    (delta,) = backend.stream("x")
    assert (delta.text, delta.finish_reason, delta.usage) == ("done", "length", usage)

    given = [StreamDelta(text="he"), StreamDelta(text="y", finish_reason="stop", usage=usage)]
    streamed = FunctionBackend(lambda messages, params: given)
    assert list(streamed.stream("x")) == given  # a finish reason was given: nothing added
    assert streamed.chat("x").usage == usage


def test_the_function_gets_the_messages_and_the_merged_parameters() -> None:
    seen: list[tuple[list[Message], GenerationParams]] = []

    def remember(messages: list[Message], params: GenerationParams) -> str:
        seen.append((messages, params))
        return "ok"

    backend = FunctionBackend(remember, defaults=GenerationParams(max_new_tokens=8))
    backend.chat([{"role": "system", "content": "terse"}, {"role": "user", "content": "q"}], temperature=0)
    ((messages, params),) = seen
    assert [m.role for m in messages] == ["system", "user"]
    assert (params.max_new_tokens, params.temperature) == (8, 0)
    assert backend.requests[0].params == params


def test_an_error_the_function_raises_reaches_the_caller_typed() -> None:
    def refuse(messages: list[Message], params: GenerationParams) -> str:
        if messages[-1].content == "bad":
            raise RateLimitError("slow down", retry_after=1.0)
        return "fine"

    backend = FunctionBackend(refuse)
    with pytest.raises(RateLimitError) as info:
        backend.chat("bad")
    assert info.value.retry_after == 1.0
    with pytest.raises(RateLimitError):
        list(backend.stream("bad"))
    with pytest.raises(RateLimitError):
        asyncio.run(backend.achat("bad"))
    results = backend.chat_many(["ok", "bad"], return_exceptions=True)
    assert isinstance(results[0], ChatResponse) and isinstance(results[1], RateLimitError)
    with pytest.raises(RateLimitError):
        backend.chat_many(["ok", "bad"])


def test_an_error_mid_stream_comes_after_the_pieces_before_it() -> None:
    def cut(messages: list[Message], params: GenerationParams) -> Iterator[str]:
        yield "part"
        raise InvalidRequestError("cut off")

    got: list[str] = []
    with pytest.raises(InvalidRequestError, match="cut off"):
        for delta in FunctionBackend(cut).stream("x"):
            got.append(delta.text)
    assert got == ["part"]


def test_async_functions_overlap_in_achat_many() -> None:
    running = 0
    peak = 0

    async def slow(messages: list[Message], params: GenerationParams) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return "done"

    backend = FunctionBackend(slow, context_window=2048)
    assert len(asyncio.run(backend.achat_many(["q"] * 8, concurrency=4))) == 8
    assert peak == 4
    assert backend.context_window == 2048
