"""Tools on the remote backend, over real loopback HTTP: the request body, replies with calls (plain and
streamed with every quirk real servers have), the run_tools loop, and the openai SDK as the oracle.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

import openai
import pytest
from remote_support import API_KEY, Caller, Script

from llmclient import ToolCall, ToolCallError, arun_tools, run_tools
from llmclient.testing.server import (
    Quirks,
    ToolCallHandler,
    json_reply,
    sse_reply,
    tool_call,
    tool_call_chunks,
    tool_call_completion,
)


def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
    """Current weather for a city.

    Args:
        city: the city's name.
        unit: the temperature unit.
    """
    if city == "Atlantis":
        raise LookupError("no such city")
    return f"21{unit} and sunny in {city}"


PARIS = tool_call("get_weather", {"city": "Paris"}, id="call_p")
ROME = tool_call("get_weather", {"city": "Rome", "unit": "F"}, id="call_r")
EXPECTED = [
    ToolCall("call_p", "get_weather", '{"city": "Paris"}'),
    ToolCall("call_r", "get_weather", '{"city": "Rome", "unit": "F"}'),
]


# -- the request body --------------------------------------------------------------------------------


def test_tools_tool_choice_and_parallel_tool_calls_are_body_fields(serve, make_backend) -> None:
    server = serve(ToolCallHandler(lambda body: "ok"))
    backend = make_backend(server)
    backend.chat("Weather?", tools=[get_weather], tool_choice="get_weather", parallel_tool_calls=False)
    body = server.requests[-1].json()
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string", "description": "the city's name."},
                        "unit": {
                            "type": "string",
                            "enum": ["C", "F"],
                            "description": "the temperature unit.",
                            "default": "C",
                        },
                    },
                    "required": ["city"],
                },
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    backend.chat("Weather?", tools=[get_weather], tool_choice="required")
    assert server.requests[-1].json()["tool_choice"] == "required"
    backend.chat("Weather?", tool_choice="none")  # no tools: nothing about tools is sent
    assert not {"tools", "tool_choice"} & set(server.requests[-1].json())


def test_openrouter_requires_the_parameters_when_tools_are_sent(serve, built) -> None:
    server = serve(ToolCallHandler(lambda body: "ok"))
    spec = {"type": "openrouter", "model": "m", "base_url": server.base_url, "api_key": API_KEY}
    backend = built(spec)
    backend.chat("Hi", tools=[get_weather])
    assert server.requests[-1].json()["provider"] == {"require_parameters": True}
    backend.chat("Hi")
    assert "provider" not in server.requests[-1].json()
    built(spec, require_parameters=False).chat("Hi", tools=[get_weather])
    assert "provider" not in server.requests[-1].json()


# -- replies with calls --------------------------------------------------------------------------------


def test_a_reply_with_calls_reads_as_the_sdk_reads_it(serve, make_backend, call: Caller) -> None:
    server = serve(ToolCallHandler(lambda body: [PARIS, ROME]))
    reply = call.chat(make_backend(server), "Weather?", tools=[get_weather])
    assert reply.tool_calls == EXPECTED and reply.finish_reason == "tool_calls"
    with openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0) as client:
        theirs = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}])
    assert [c.to_dict() for c in reply.tool_calls] == [
        c.model_dump() for c in theirs.choices[0].message.tool_calls or []
    ]
    assert [c.args for c in reply.tool_calls] == [{"city": "Paris"}, {"city": "Rome", "unit": "F"}]


@pytest.mark.parametrize(
    "message",
    [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}],
        },
        {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        },
    ],
    ids=["object-arguments-empty-id", "legacy-function-call"],
)
def test_non_standard_calls_in_plain_replies(
    serve, make_backend, call: Caller, message: dict[str, Any]
) -> None:
    body = tool_call_completion([], finish_reason="stop")
    body["choices"][0]["message"] = message
    server = serve(Script([json_reply(body)]))
    reply = call.chat(make_backend(server), "Weather?", tools=[get_weather])
    assert reply.tool_calls == [ToolCall("call_0", "get_weather", '{"city": "Oslo"}')]
    assert reply.finish_reason == "tool_calls"


QUIRKS = {
    "openai": Quirks(),
    "ollama-all-index-0": Quirks(index="zero"),
    "no-index": Quirks(index="none"),
    "name-in-every-fragment": Quirks(repeat_name=True),
    "arguments-as-object": Quirks(object_arguments=True),
    "id-on-a-later-fragment": Quirks(ids="late"),
    "id-on-every-fragment": Quirks(ids="every"),
    "finish-stop-after-calls": Quirks(finish_reason="stop"),
    "ollama-objects-stop": Quirks(index="zero", object_arguments=True, finish_reason="stop"),
    "no-index-name-repeated": Quirks(index="none", repeat_name=True),
}


@pytest.mark.parametrize("quirks", list(QUIRKS.values()), ids=list(QUIRKS))
def test_streamed_calls_survive_what_real_servers_send(
    serve, make_backend, call: Caller, quirks: Quirks
) -> None:
    server = serve(ToolCallHandler(lambda body: [PARIS, ROME], quirks=quirks))
    _, reply = call.stream(make_backend(server), "Weather?", tools=[get_weather])
    assert reply.tool_calls == EXPECTED
    assert reply.finish_reason == "tool_calls"


@pytest.mark.parametrize("ids", ["missing", "empty"])
def test_streamed_calls_without_ids_get_synthetic_ones(serve, make_backend, call: Caller, ids: Any) -> None:
    server = serve(ToolCallHandler(lambda body: [PARIS, ROME], quirks=Quirks(ids=ids)))
    _, reply = call.stream(make_backend(server), "Weather?", tools=[get_weather])
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [
        ("call_0", "get_weather", '{"city": "Paris"}'),
        ("call_1", "get_weather", '{"city": "Rome", "unit": "F"}'),
    ]


def test_openai_style_streams_read_as_the_sdk_reads_them(serve, make_backend) -> None:
    server = serve(Script([sse_reply(tool_call_chunks([PARIS, ROME]))] * 2))
    _, ours = Caller("sync", None).stream(make_backend(server), "Weather?")  # type: ignore[arg-type]
    calls: dict[int, list[str]] = {}
    with openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0) as client:
        for chunk in client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Hi"}], stream=True
        ):
            for t in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                entry = calls.setdefault(t.index, ["", "", ""])
                entry[0] = t.id or entry[0]
                entry[1] += (t.function and t.function.name) or ""
                entry[2] += (t.function and t.function.arguments) or ""
    assert [(c.id, c.name, c.arguments) for c in ours.tool_calls] == [tuple(calls[i]) for i in sorted(calls)]


def test_a_streamed_call_with_bad_arguments_raises_naming_the_tool(serve, make_backend, call: Caller) -> None:
    bad = tool_call("get_weather", '{"town": "Paris"}', id="call_b")
    server = serve(ToolCallHandler(lambda body: [bad]))
    with pytest.raises(ToolCallError, match=r"'get_weather'.*'city' is a required property"):
        call.stream(make_backend(server), "Weather?", tools=[get_weather])


# -- the loop ---------------------------------------------------------------------------------------------


def weather_model(body: dict[str, Any]) -> Any:
    """Asks for the weather in Paris and Atlantis, then reports the results it was sent."""
    results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
    if not results:
        return [PARIS, tool_call("get_weather", {"city": "Atlantis"}, id="call_a")]
    return " / ".join(results)


def test_run_tools_two_rounds_against_the_server(serve, make_backend) -> None:
    server = serve(ToolCallHandler(weather_model))
    run = run_tools(make_backend(server), "Weather in Paris and Atlantis?", [get_weather], max_new_tokens=64)
    assert run.text == "21C and sunny in Paris / Error: LookupError: no such city"
    assert run.rounds == 2 and len(server.requests) == 2
    second = server.requests[1].json()
    assert second["max_tokens"] == 64
    assert second["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [PARIS, tool_call("get_weather", {"city": "Atlantis"}, id="call_a")],
        },
        {"role": "tool", "content": "21C and sunny in Paris", "tool_call_id": "call_p"},
        {"role": "tool", "content": "Error: LookupError: no such city", "tool_call_id": "call_a"},
    ]


def test_arun_tools_runs_concurrent_calls_against_the_server(serve, make_backend, runner) -> None:
    gate = asyncio.Event()
    entered: list[str] = []

    async def slow_lookup(city: str) -> dict[str, Any]:
        """Look a city up.

        Args:
            city: the city.
        """
        entered.append(city)
        if len(entered) == 2:
            gate.set()
        await asyncio.wait_for(gate.wait(), 5)
        return {"city": city, "population": len(city)}

    def model(body: dict[str, Any]) -> Any:
        results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        if not results:
            return [tool_call("slow_lookup", {"city": c}, id=f"c{i}") for i, c in enumerate(["Oslo", "Lima"])]
        return ";".join(results)

    server = serve(ToolCallHandler(model, quirks=Quirks(index="zero")))
    run = runner.run(arun_tools(make_backend(server), "Sizes?", [slow_lookup]))
    assert [json.loads(part) for part in run.text.split(";")] == [
        {"city": "Oslo", "population": 4},
        {"city": "Lima", "population": 4},
    ]
