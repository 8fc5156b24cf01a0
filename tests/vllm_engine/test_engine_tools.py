"""Tool calls on a real vLLM engine, read by llmclient's own parsers, against ``hf:smollm2``.

SmolLM2's template does not read ``tools``: both backends show them through the ``smollm2``
profile, so the prompts are the same text. With vLLM's ``guidance`` backend (``vllm_guided``) a
forced call is held to the same grammar as on the local backend, so greedy calls are the same calls;
without it (``vllm_backend``) ``tool_choice="auto"`` is read, unconstrained, and a forced call is
refused, naming the setting.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from engine_support import VLLM_WARNINGS
from weather_tools import get_time, get_weather

import llmclient
from llmclient.backends.vllm_engine import VLLMEngineBackend
from llmclient.errors import UnsupportedFeatureError

pytestmark = VLLM_WARNINGS

ASK = "What is the weather in Lisbon?"


def calls(reply: Any) -> list[tuple[str, str]]:
    return [(c.name, c.arguments) for c in reply.tool_calls]


@pytest.mark.parametrize(
    ("tools", "choice"),
    [
        ([get_weather], "required"),
        ([get_weather, get_time], "get_time"),
        ([get_time, get_weather], "required"),
    ],
    ids=["required", "named", "several"],
)
def test_forced_calls_equal_the_local_backends(
    vllm_guided: VLLMEngineBackend, smollm2_float32: Any, tools: list[Any], choice: str
) -> None:
    ours = vllm_guided.chat(ASK, tools=tools, tool_choice=choice, max_new_tokens=60, temperature=0)
    theirs = smollm2_float32.chat(ASK, tools=tools, tool_choice=choice, max_new_tokens=60, temperature=0)
    assert ours.finish_reason == "tool_calls" and calls(ours) == calls(theirs) and calls(ours)
    assert all(c.id for c in ours.tool_calls) and ours.text == theirs.text
    assert ours.tool_calls[0].args == theirs.tool_calls[0].args  # checked against the tool's schema


def test_tools_reach_the_prompt_as_on_the_local_backend(
    vllm_backend: VLLMEngineBackend, smollm2_float32: Any
) -> None:
    ours = vllm_backend.render_prompt(ASK, tools=[get_weather])
    assert ours == smollm2_float32.render_prompt(ASK, tools=[get_weather])
    assert "<tools>[{" in ours and '"name": "get_weather"' in ours
    assert "<tools>" not in vllm_backend.render_prompt(ASK, tools=[get_weather], tool_choice="none")
    assert vllm_backend.count_tokens(ASK) < len(ours)


def test_auto_is_read_unconstrained_and_forced_calls_need_guidance(
    vllm_backend: VLLMEngineBackend, smollm2_float32: Any
) -> None:
    ours = vllm_backend.chat("Say hello.", tools=[get_weather], max_new_tokens=30, temperature=0)
    theirs = smollm2_float32.chat("Say hello.", tools=[get_weather], max_new_tokens=30, temperature=0)
    assert ours.text == theirs.text and ours.text and not ours.tool_calls
    with pytest.raises(
        UnsupportedFeatureError, match=re.escape('structured_outputs_config = { backend = "guidance" }')
    ):
        vllm_backend.chat(ASK, tools=[get_weather], tool_choice="required")
    with pytest.raises(UnsupportedFeatureError, match="response_format"):
        vllm_backend.chat(ASK, tools=[get_weather], response_format=llmclient.JSON)


def test_a_stream_carries_the_calls_and_no_call_text(vllm_guided: VLLMEngineBackend) -> None:
    reply = vllm_guided.chat(
        ASK, tools=[get_weather], tool_choice="required", max_new_tokens=60, temperature=0
    )
    stream = vllm_guided.stream(
        ASK, tools=[get_weather], tool_choice="required", max_new_tokens=60, temperature=0
    )
    deltas = list(stream)
    final = stream.final()
    assert "".join(d.text for d in deltas) == "" and deltas[-1].finish_reason == "tool_calls"
    assert calls(final) == calls(reply) and final.finish_reason == "tool_calls"


def test_an_auto_stream_is_the_chat_reply(vllm_guided: VLLMEngineBackend) -> None:
    async def run() -> tuple[str, Any]:
        stream = vllm_guided.astream("Say hello.", tools=[get_weather], max_new_tokens=20, temperature=0)
        text = "".join([d.text async for d in stream])
        return text, await stream.final()

    text, final = asyncio.run(run())
    reply = vllm_guided.chat("Say hello.", tools=[get_weather], max_new_tokens=20, temperature=0)
    assert text == final.text == reply.text and not final.tool_calls


def test_a_tool_loop_ends_in_text_as_on_the_local_backend(
    vllm_guided: VLLMEngineBackend, smollm2_float32: Any
) -> None:
    options: dict[str, Any] = {
        "max_rounds": 3,
        "tool_choice": "required",
        "max_new_tokens": 60,
        "temperature": 0,
    }
    ours = llmclient.run_tools(vllm_guided, ASK, [get_weather], **options)
    theirs = llmclient.run_tools(smollm2_float32, ASK, [get_weather], **options)
    assert ours.done and ours.rounds == 2 and ours.text == theirs.text
    assert ours.messages[2].role == "tool" and "Lisbon" in ours.messages[2].text


def test_a_batch_mixes_rows_with_and_without_tools(vllm_guided: VLLMEngineBackend) -> None:
    replies = vllm_guided.chat_many(
        [ASK, "Weather in Paris?"], tools=[get_weather], tool_choice="required", max_new_tokens=40
    )
    assert [r.tool_calls[0].name for r in replies] == ["get_weather", "get_weather"]

    async def rows() -> list[Any]:
        return await asyncio.gather(
            vllm_guided.achat(ASK, tools=[get_weather], tool_choice="required", max_new_tokens=40),
            vllm_guided.achat("Say hello.", max_new_tokens=20, temperature=0),
            vllm_guided.achat(ASK, tools=[get_time, get_weather], tool_choice="get_time", max_new_tokens=40),
        )

    first, plain, third = asyncio.run(rows())
    assert first.tool_calls[0].name == "get_weather" and third.tool_calls[0].name == "get_time"
    assert plain.text == vllm_guided.chat("Say hello.", max_new_tokens=20, temperature=0).text
    assert not plain.tool_calls
