"""Streamed replies: the accumulator that joins deltas, and closing streams early."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest

from llmclient import AsyncChatStream, ChatResponse, ChatStream, StreamDelta, ToolCall, Usage
from llmclient.stream import StreamAccumulator


def accumulate(*deltas: StreamDelta, model: str = "configured-model") -> ChatResponse:
    acc = StreamAccumulator(model=model, backend="b")
    for delta in deltas:
        acc.add(delta)
    return acc.response()


# -- the accumulator ----------------------------------------------------------------------------


def test_text_pieces_are_joined_in_order() -> None:
    reply = accumulate(StreamDelta(text="Hel"), StreamDelta(text="lo"), StreamDelta(), StreamDelta(text="!"))
    assert reply.text == "Hello!"
    assert reply.backend == "b"


def test_reasoning_pieces_are_joined_apart_from_the_text() -> None:
    reply = accumulate(
        StreamDelta(details={"reasoning": "Let me "}),
        StreamDelta(details={"reasoning": "think."}),
        StreamDelta(text="42"),
    )
    assert reply.text == "42"
    assert reply.details["reasoning"] == "Let me think."


def test_no_reasoning_means_no_reasoning_key() -> None:
    assert "reasoning" not in accumulate(StreamDelta(text="x")).details


def test_tool_call_fragments_are_merged_by_index_as_openai_streams_them() -> None:
    # The shape of OpenAI's streamed tool calls: the first fragment of each call has its id, type
    # and name; later fragments carry pieces of the JSON arguments, matched by index.
    fragments = [
        [
            {
                "index": 0,
                "id": "call_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ],
        [{"index": 0, "function": {"arguments": '{"ci'}}],
        [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_", "arguments": ""}}],
        [{"index": 1, "function": {"name": "time", "arguments": '{"tz": '}}],
        [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}],
        [{"index": 1, "function": {"arguments": '"UTC"}'}}],
    ]
    reply = accumulate(
        *(StreamDelta(details={"tool_calls": f}) for f in fragments),
        StreamDelta(finish_reason="tool_calls"),
    )
    assert reply.tool_calls == [
        ToolCall(id="call_a", name="get_weather", arguments='{"city": "Paris"}'),
        ToolCall(id="call_b", name="get_time", arguments='{"tz": "UTC"}'),  # a name sent in pieces
    ]
    assert [json.loads(c.arguments) for c in reply.tool_calls] == [{"city": "Paris"}, {"tz": "UTC"}]
    assert reply.finish_reason == "tool_calls"
    assert "tool_calls" not in reply.details


def test_tool_calls_are_ordered_by_index_not_arrival() -> None:
    reply = accumulate(
        StreamDelta(details={"tool_calls": [{"index": 1, "id": "second", "function": {"name": "b"}}]}),
        StreamDelta(details={"tool_calls": [{"index": 0, "id": "first", "function": {"name": "a"}}]}),
    )
    assert [c.id for c in reply.tool_calls] == ["first", "second"]


def test_fragments_without_an_index_go_by_position() -> None:
    reply = accumulate(
        StreamDelta(
            details={
                "tool_calls": [
                    {"id": "x", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "y", "function": {"name": "g", "arguments": "{}"}},
                ]
            }
        )
    )
    assert [c.name for c in reply.tool_calls] == ["f", "g"]


def test_no_tool_calls_means_an_empty_list() -> None:
    assert accumulate(StreamDelta(text="x")).tool_calls == []


def test_the_last_finish_reason_and_usage_are_kept() -> None:
    reply = accumulate(
        StreamDelta(text="a", finish_reason="length", usage=Usage(1, 1)),
        StreamDelta(text="b"),  # a delta without them does not clear them
        StreamDelta(finish_reason="stop"),
        StreamDelta(usage=Usage(5, 2)),
    )
    assert reply.finish_reason == "stop"
    assert reply.usage == Usage(5, 2)


def test_nothing_received_is_an_empty_reply() -> None:
    reply = accumulate()
    assert (reply.text, reply.finish_reason, reply.usage, reply.tool_calls) == ("", None, None, [])
    assert reply.model == "configured-model"


def test_the_model_named_in_details_replaces_the_configured_one() -> None:
    reply = accumulate(StreamDelta(text="x", details={"model": "served-model-2024", "id": "gen-1"}))
    assert reply.model == "served-model-2024"
    assert reply.details == {"id": "gen-1"}  # model is a field, not a detail


def test_other_details_are_kept_with_the_last_value_winning() -> None:
    reply = accumulate(
        StreamDelta(details={"provider": "A", "id": "1"}), StreamDelta(details={"provider": "B"})
    )
    assert reply.details == {"provider": "B", "id": "1"}


# -- ChatStream ---------------------------------------------------------------------------------


class Source:
    """A generator of deltas that records how far it got and whether it was closed."""

    def __init__(self, *texts: str) -> None:
        self.texts = texts
        self.sent = 0
        self.closed = False

    def deltas(self) -> Iterator[StreamDelta]:
        try:
            for text in self.texts:
                self.sent += 1
                yield StreamDelta(text=text)
            yield StreamDelta(finish_reason="stop", usage=Usage(3, len(self.texts)))
        finally:
            self.closed = True

    async def adeltas(self) -> AsyncIterator[StreamDelta]:
        try:
            for text in self.texts:
                self.sent += 1
                yield StreamDelta(text=text)
            yield StreamDelta(finish_reason="stop", usage=Usage(3, len(self.texts)))
        finally:
            self.closed = True


def test_a_chat_stream_yields_the_deltas_and_final_joins_them() -> None:
    source = Source("a", "b", "c")
    stream = ChatStream(source.deltas(), model="m", backend="b")
    assert next(stream).text == "a"
    assert stream.text == "a"
    final = stream.final()
    assert (final.text, final.finish_reason, final.usage, final.model) == ("abc", "stop", Usage(3, 3), "m")
    assert source.closed


def test_closing_a_chat_stream_closes_the_underlying_generator() -> None:
    source = Source("a", "b", "c")
    stream = ChatStream(source.deltas(), model="m", backend="b")
    next(stream)
    stream.close()
    assert source.closed
    assert source.sent == 1
    assert list(stream) == []  # nothing more comes after close
    assert stream.final().text == "a"


def test_leaving_a_with_block_closes_the_chat_stream() -> None:
    source = Source("a", "b", "c")
    with ChatStream(source.deltas(), model="m", backend="b") as stream:
        for _ in stream:
            break
    assert source.closed and source.sent == 1


def test_a_chat_stream_over_a_plain_iterator_closes_without_error() -> None:
    stream = ChatStream(iter([StreamDelta(text="x")]), model="m", backend="b")
    stream.close()  # a list iterator has no close(); that is fine


# -- AsyncChatStream ----------------------------------------------------------------------------


async def test_an_async_chat_stream_yields_the_deltas_and_final_joins_them() -> None:
    source = Source("a", "b")
    stream = AsyncChatStream(source.adeltas(), model="m", backend="b")
    first = await stream.__anext__()
    assert first.text == "a" and stream.text == "a"
    final = await stream.final()
    assert (final.text, final.finish_reason, final.usage) == ("ab", "stop", Usage(3, 2))


async def test_aclose_closes_the_underlying_async_generator() -> None:
    source = Source("a", "b", "c")
    stream = AsyncChatStream(source.adeltas(), model="m", backend="b")
    await stream.__anext__()
    await stream.aclose()
    assert source.closed and source.sent == 1
    assert [d async for d in stream] == []


async def test_leaving_an_async_with_block_closes_the_async_chat_stream() -> None:
    source = Source("a", "b", "c")
    async with AsyncChatStream(source.adeltas(), model="m", backend="b") as stream:
        async for _ in stream:
            break
    assert source.closed and source.sent == 1


async def test_an_async_chat_stream_over_an_iterator_without_aclose_closes_without_error() -> None:
    class Plain:
        def __aiter__(self) -> Plain:
            return self

        async def __anext__(self) -> StreamDelta:
            raise StopAsyncIteration

    stream = AsyncChatStream(Plain(), model="m", backend="b")
    await stream.aclose()
    assert (await stream.final()).text == ""


@pytest.mark.parametrize("n", [0, 1, 50])
def test_a_stream_of_n_pieces_joins_to_the_same_text(n: int) -> None:
    pieces = [f"{i}," for i in range(n)]
    assert ChatStream(Source(*pieces).deltas(), model="m", backend="b").final().text == "".join(pieces)
