"""Real tool-calling conversations recorded against OpenAI and OpenRouter (chatlas, simonw/llm-openrouter)
replay through CassetteTransport to the right calls, and the history we build for the next turn is the
one the recording sent.

The recordings live in tests/data/real-cassettes (copied with their licences; tests/data/README.md
names the source repositories and commits).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmclient import Message, ToolCall, tool_result
from llmclient.backends.openai import OpenAICompatibleBackend
from llmclient.retry import RetryPolicy
from llmclient.testing.cassettes.vcr import CassetteTransport

REAL = Path(__file__).resolve().parents[1] / "data" / "real-cassettes"
CONVERSATIONS = {
    "chatlas-openai": (
        "chatlas/tests/_vcr/test_provider_openai_completions/test_openai_tool_variations_async.yaml",
        "2024-01-01",
    ),
    "chatlas-openrouter": (
        "chatlas/tests/_vcr/test_provider_openrouter/test_openrouter_tool_variations.yaml",
        "2024-01-01",
    ),
    "llm-openrouter": ("simonw-llm-openrouter/test_tool_calls.yaml", "0.0+test"),
}


def _chat_items(path: Path) -> list[dict[str, Any]]:
    items = yaml.safe_load(path.read_text())["interactions"]
    return [i for i in items if i["request"]["uri"].endswith("/chat/completions")]


def _without_null_content(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if not (k == "content" and v is None)}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_a_recorded_tool_round_trip_replays_to_the_calls_and_the_history_sent(name: str, mode: str) -> None:
    relative, result = CONVERSATIONS[name]
    path = REAL / relative
    if not path.exists():
        pytest.skip(f"{path} not found (real recordings)")
    first, second = _chat_items(path)[:2]
    sent = json.loads(first["request"]["body"])
    tools = sent["tools"]
    messages = [Message(role=m["role"], content=m["content"]) for m in sent["messages"]]
    base_url = first["request"]["uri"].removesuffix("/chat/completions")
    backend = OpenAICompatibleBackend(
        model=sent["model"],
        base_url=base_url,
        api_key="sk-test-0000",
        transport=CassetteTransport(path),
        retry=RetryPolicy(max_attempts=1),
    )

    def streamed(history: list[Message]) -> Any:
        if mode == "sync":
            return backend.stream(history, tools=tools).final()

        async def run() -> Any:
            stream = backend.astream(history, tools=tools)
            async for _ in stream:
                pass
            return await stream.final()

        return asyncio.run(run())

    with backend:
        reply = streamed(messages)
        recorded_call = json.loads(second["request"]["body"])["messages"][len(messages)]["tool_calls"][0]
        expected = ToolCall(
            recorded_call["id"], recorded_call["function"]["name"], recorded_call["function"]["arguments"]
        )
        assert reply.tool_calls == [expected] and reply.finish_reason == "tool_calls"

        history = [*messages, reply.message, tool_result(reply.tool_calls[0], result)]
        ours = json.loads(backend.render_prompt(history, tools=tools))
        theirs = json.loads(second["request"]["body"])
        assert [_without_null_content(m) for m in ours["messages"][len(messages) :]] == theirs["messages"][
            len(messages) :
        ]
        assert ours["tools"] == theirs["tools"]

        answer = streamed(history)
    assert answer.tool_calls == [] and answer.finish_reason == "stop" and result[:4] in answer.text
