"""Backend-level cassettes record and replay tool calls: in replies, in streams, and in the request key
(the tools offered, the choice, and the calls and results of history).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmclient import ChatResponse, Message, StreamDelta, ToolCall, tool_result
from llmclient.testing import FunctionBackend, cassette
from llmclient.types import GenerationParams


def lookup(city: str) -> str:
    """Look a city up.

    Args:
        city: the city.
    """
    return city


def model(messages: list[Message], params: GenerationParams) -> Any:
    if messages[-1].role == "tool":
        return "done"
    call = {"id": "call_x", "function": {"name": "lookup", "arguments": '{"city": "Oslo"}'}}
    if params.extra.get("stream"):
        return [
            StreamDelta(details={"tool_calls": [{"index": 0, **call}]}),
            StreamDelta(finish_reason="tool_calls"),
        ]
    return ChatResponse(text="", finish_reason="tool_calls", tool_calls=[call])  # type: ignore[list-item]


def conversation(backend: Any) -> list[Any]:
    reply = backend.chat("Where?", tools=[lookup], tool_choice="lookup")
    streamed = backend.stream("Where?", tools=[lookup], extra={"stream": True}).final()
    answer = backend.chat(
        [Message(role="user", content="Where?"), reply.message, tool_result(reply.tool_calls[0], "Oslo")],
        tools=[lookup],
    )
    return [reply.tool_calls, streamed.tool_calls, answer.text]


def test_tool_calls_record_and_replay(tmp_path: Path) -> None:
    path = tmp_path / "tools.yaml"
    with cassette(path, FunctionBackend(model)) as recording:
        recorded = conversation(recording)
    expected = [ToolCall("call_x", "lookup", '{"city": "Oslo"}')]
    assert recorded == [expected, expected, "done"]

    with cassette(path) as replay:
        assert conversation(replay) == recorded

    entries = yaml.safe_load(path.read_text())["interactions"]
    first = entries[0]
    assert first["request"]["params"]["tool_choice"] == "lookup"
    assert first["request"]["params"]["tools"][0]["function"]["name"] == "lookup"
    assert first["response"]["tool_calls"] == [
        {"id": "call_x", "type": "function", "function": {"name": "lookup", "arguments": '{"city": "Oslo"}'}}
    ]
    history = entries[2]["request"]["messages"]
    assert history[1]["tool_calls"][0]["id"] == "call_x" and history[2]["tool_call_id"] == "call_x"
    assert "tool_calls" not in entries[2]["response"]  # a text reply writes no calls
