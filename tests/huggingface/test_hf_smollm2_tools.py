"""Tool calling on the embedded SmolLM2 (its ``smollm2`` tool profile): forced calls are schema-valid
for tools of several shapes, ``auto`` answers in text where no tool is needed, ``run_tools`` ends in
text, and streams and ``chat_many`` carry calls."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel
from weather_tools import get_time, get_weather

import llmclient

pytestmark = pytest.mark.slow  # a real model, tens of seconds in all


class Address(BaseModel):
    street: str
    city: str


class ShipOrder(BaseModel):
    """Ship an order to an address."""

    item: str
    quantity: int
    address: Address


ASK = "What is the weather in Lisbon?"


@pytest.mark.parametrize(
    ("tools", "choice", "name"),
    [
        ([get_weather], "required", "get_weather"),
        ([get_weather, get_time], "get_time", "get_time"),
        ([get_weather, ShipOrder], "ShipOrder", "ShipOrder"),
        ([get_time, get_weather, ShipOrder], "required", None),
    ],
    ids=["enum", "no-arguments", "nested", "several"],
)
def test_forced_calls_fit_their_schema(
    smollm2_backend: Any, tools: list[Any], choice: str, name: str | None
) -> None:
    reply = smollm2_backend.chat(ASK, tools=tools, tool_choice=choice, max_new_tokens=80)
    assert reply.finish_reason == "tool_calls" and reply.tool_calls
    for call in reply.tool_calls:
        assert call.id and (name is None or call.name == name)
        assert isinstance(call.args, dict)  # checked against the tool's schema by .args


def test_lisbon_call(smollm2_backend: Any) -> None:
    reply = smollm2_backend.chat(ASK, tools=[get_weather], tool_choice="required", max_new_tokens=60)
    assert reply.tool_calls[0].name == "get_weather" and reply.tool_calls[0].args["city"] == "Lisbon"


def test_auto_without_need_answers_in_text(smollm2_backend: Any) -> None:
    reply = smollm2_backend.chat("Say hello.", tools=[get_weather], tool_choice="auto", max_new_tokens=30)
    assert reply.text and not reply.tool_calls


def test_tools_reach_the_prompt(smollm2_backend: Any) -> None:
    text = smollm2_backend.render_prompt(ASK, tools=[get_weather])
    assert "<tools>[{" in text and '"name": "get_weather"' in text
    assert "<tools>" not in smollm2_backend.render_prompt(ASK, tools=[get_weather], tool_choice="none")


def test_run_tools_ends_in_text(smollm2_backend: Any) -> None:
    run = llmclient.run_tools(
        smollm2_backend, ASK, [get_weather], max_rounds=3, tool_choice="required", max_new_tokens=60
    )
    assert run.done and run.text and run.rounds == 2
    assert run.messages[2].role == "tool" and "Lisbon" in run.messages[2].text


def test_stream_carries_the_calls(smollm2_backend: Any) -> None:
    stream = smollm2_backend.stream(ASK, tools=[get_weather], tool_choice="required", max_new_tokens=60)
    deltas = list(stream)
    reply = stream.final()
    assert deltas[-1].finish_reason == "tool_calls"
    assert any("tool_calls" in d.details for d in deltas)
    assert reply.tool_calls[0].name == "get_weather" and reply.tool_calls[0].args["city"] == "Lisbon"


def test_astream_text_only_without_calls(smollm2_backend: Any) -> None:
    async def run() -> tuple[str, Any]:
        stream = smollm2_backend.astream("Say hello.", tools=[get_weather], max_new_tokens=20)
        text = "".join([d.text async for d in stream])
        return text, await stream.final()

    text, reply = asyncio.run(run())
    assert text == reply.text and not reply.tool_calls


def test_batched_rows_mix_tools(smollm2_backend: Any) -> None:
    """Rows with a forced call, none, and another tool share batches (``achat`` tasks batch together);
    ``chat_many`` with tools gives each row its calls."""

    async def rows() -> list[Any]:
        return await asyncio.gather(
            smollm2_backend.achat(ASK, tools=[get_weather], tool_choice="required", max_new_tokens=40),
            smollm2_backend.achat("Say hello.", max_new_tokens=20),
            smollm2_backend.achat(
                ASK, tools=[get_time, get_weather], tool_choice="get_time", max_new_tokens=40
            ),
        )

    first, plain, third = asyncio.run(rows())
    assert first.tool_calls[0].name == "get_weather"
    assert plain.text and not plain.tool_calls
    assert third.tool_calls[0].name == "get_time"
    many = smollm2_backend.chat_many(
        [ASK, "Weather in Paris?"], tools=[get_weather], tool_choice="required", max_new_tokens=40
    )
    assert [r.tool_calls[0].name for r in many] == ["get_weather", "get_weather"]
