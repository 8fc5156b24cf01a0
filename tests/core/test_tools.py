"""Tools as every backend takes them: what ``tools=`` and ``tool_choice=`` accept, the calls a reply
holds (ids, finish reason, arguments checked in the base class), history, and tool results.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any, Literal

import pydantic
import pytest

from llmclient import (
    ChatResponse,
    GenerationParams,
    InvalidRequestError,
    Message,
    StructuredOutputError,
    Tool,
    ToolCall,
    ToolCallError,
    tool_result,
)
from llmclient.testing import FunctionBackend
from llmclient.tools import to_tool, to_tools
from llmclient.types import to_message


class Unit(enum.Enum):
    C = "C"
    F = "F"


def get_weather(city: str, unit: Literal["C", "F"] = "C", days: int | None = None) -> str:
    """Current weather for a city.

    Args:
        city: the city's name,
            as people write it.
        unit: the temperature unit.
        days: how many days ahead.

    Returns:
        The weather, in words.
    """
    return f"sunny in {city}, 21{unit}"


class Order(pydantic.BaseModel):
    """Record an order."""

    dish: str
    quantity: int


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def calls_reply(*calls: dict[str, Any] | ToolCall, finish: Any = "tool_calls") -> ChatResponse:
    return ChatResponse(text="", finish_reason=finish, tool_calls=list(calls))  # type: ignore[arg-type]


def answering(*replies: ChatResponse) -> FunctionBackend:
    queue = list(replies)
    return FunctionBackend(lambda messages, params: queue.pop(0))


# -- what tools= accepts -------------------------------------------------------------------------------


def test_a_function_reads_as_transformers_get_json_schema_reads_it() -> None:
    tool = to_tool(get_weather)
    assert tool.name == "get_weather" and tool.description == "Current weather for a city."
    assert tool.function is get_weather
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "the city's name, as people write it."},
            "unit": {
                "type": "string",
                "enum": ["C", "F"],
                "description": "the temperature unit.",
                "default": "C",
            },
            "days": {"type": ["integer", "null"], "description": "how many days ahead.", "default": None},
        },
        "required": ["city"],
    }


def test_function_schemas_cover_enums_lists_dicts_choices_and_methods() -> None:
    class Kitchen:
        def cook(
            self, unit: Unit, dishes: list[str], notes: dict[str, int], pair: tuple[int, str], mood: str
        ):
            """Cook.

            Args:
                mood: how to cook (choices: ["calm", "fast"])
            """

    params = to_tool(Kitchen().cook).parameters
    props = params["properties"]
    assert props["unit"] == {"type": "string", "enum": ["C", "F"]}
    assert props["dishes"] == {"type": "array", "items": {"type": "string"}}
    assert props["notes"] == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert props["pair"]["prefixItems"] == [{"type": "integer"}, {"type": "string"}]
    assert props["mood"] == {"type": "string", "enum": ["calm", "fast"], "description": "how to cook"}
    assert "self" not in props and params["required"] == ["unit", "dishes", "notes", "pair", "mood"]


def test_a_function_argument_without_a_type_hint_is_refused_by_name() -> None:
    def f(city):  # type: ignore[no-untyped-def]
        """F."""

    with pytest.raises(InvalidRequestError, match=r"tools\[0\] \('f'\): argument 'city' has no type hint"):
        to_tools([f])


class Thing:
    pass


def test_a_custom_class_argument_says_to_write_the_schema() -> None:
    def f(thing: Thing) -> None:
        """F."""

    with pytest.raises(InvalidRequestError, match="pass the tool as a JSON Schema dict"):
        to_tool(f)


def test_tool_dicts_in_the_openai_shape_or_bare_and_pydantic_models() -> None:
    assert to_tool(WEATHER) == to_tool(WEATHER["function"])
    assert to_tool(WEATHER).to_dict() == WEATHER
    order = to_tool(Order)
    assert (order.name, order.description, order.model) == ("Order", "Record an order.", Order)
    assert order.parameters["required"] == ["dish", "quantity"]
    assert to_tool(order) is order


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        (get_weather, "tools takes a list"),
        ([42], r"tools\[0\] must be a Python function"),
        ([{"name": "bad name!"}], "a tool name is 1 to 64 letters"),
        ([{"name": "f", "parameters": {"type": "string"}}], "JSON Schema of an object"),
        ([{"name": "f", "parameters": {"type": "object", "required": "city"}}], "not a valid JSON Schema"),
        ([{"name": "f", "paramters": {}}], r"unknown key\(s\) \['paramters'\]"),
        ([get_weather, WEATHER], "two tools named 'get_weather'"),
    ],
)
def test_what_is_no_tool_is_refused_before_sending(tools: Any, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        GenerationParams.from_options({"tools": tools})


# -- tool_choice and parallel_tool_calls as generation parameters -------------------------------------


def test_tool_parameters_are_plain_json_in_the_cassette_key() -> None:
    params = GenerationParams.from_options(
        {
            "tools": [get_weather],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": False,
        }
    )
    assert params.tool_choice == "get_weather"
    data = params.to_dict()
    assert data["tools"] == [to_tool(get_weather).to_dict()] and data["parallel_tool_calls"] is False
    json.dumps(data)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tools": [get_weather], "tool_choice": "get_wether"}, "did you mean 'get_weather'"),
        ({"tools": [get_weather], "tool_choice": 3}, "tool_choice must be 'auto'"),
        ({"tools": [get_weather], "parallel_tool_calls": "yes"}, "parallel_tool_calls must be True or False"),
    ],
)
def test_bad_tool_parameters_name_the_fix(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        GenerationParams.from_options(options)


def test_a_named_choice_meets_the_tools_of_the_defaults() -> None:
    backend = FunctionBackend(
        lambda m, p: "ok", defaults=GenerationParams.from_options({"tools": [get_weather]})
    )
    backend.chat("Hi", tool_choice="get_weather")
    assert backend.requests[-1].params.tool_choice == "get_weather"
    with pytest.raises(InvalidRequestError, match="names no tool given"):
        backend.chat("Hi", tool_choice="get_time")
    with pytest.raises(InvalidRequestError, match="needs tools"):
        FunctionBackend(lambda m, p: "ok").chat("Hi", tool_choice="required")


# -- calls in replies: ids, finish reason, checked arguments -------------------------------------------


def test_calls_get_ids_numbered_through_the_conversation_where_the_server_sent_none() -> None:
    history = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_0", "function": {"name": "a"}}]},
        {"role": "tool", "content": "1", "tool_call_id": "call_0"},
    ]
    backend = answering(
        calls_reply(
            {"function": {"name": "a"}},
            {"id": "", "function": {"name": "b"}},
            {"id": "x", "function": {"name": "c"}},
        )
    )
    reply = backend.chat(history)
    assert [c.id for c in reply.tool_calls] == ["call_1", "call_2", "x"]


def test_a_stop_after_calls_is_reported_as_tool_calls() -> None:
    reply = answering(calls_reply({"id": "c", "function": {"name": "a"}}, finish="stop")).chat("Hi")
    assert reply.finish_reason == "tool_calls" and reply.details["native_finish_reason"] == "stop"


def test_a_call_to_a_tool_not_offered_names_the_tools_offered() -> None:
    backend = answering(calls_reply({"id": "c", "function": {"name": "get_time", "arguments": "{}"}}))
    with pytest.raises(
        ToolCallError, match="'get_time', which was not offered; the tools offered: 'get_weather'"
    ):
        backend.chat("Hi", tools=[get_weather])


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ('{"city": ', "not a JSON object: invalid JSON"),
        ("[1]", "a JSON list, not an object"),
        ('{"city": 3}', "do not match its schema: city: 3 is not of type 'string'"),
        ('{"unit": "C"}', "'city' is a required property"),
    ],
)
def test_arguments_that_do_not_fit_raise_a_typed_error_naming_the_tool(arguments: str, error: str) -> None:
    backend = answering(
        calls_reply({"id": "c1", "function": {"name": "get_weather", "arguments": arguments}})
    )
    with pytest.raises(ToolCallError, match=error) as info:
        backend.chat("Hi", tools=[get_weather])
    assert isinstance(info.value, StructuredOutputError)  # caught where replies that do not fit are
    assert info.value.tool == "get_weather" and info.value.offered == ("get_weather",)
    assert info.value.reply.tool_calls[0].id == "c1"  # the reply is kept, with its calls


def test_valid_calls_parse_and_carry_their_tool() -> None:
    backend = answering(
        calls_reply({"id": "c", "function": {"name": "get_weather", "arguments": '{"city": "Lisbon"}'}})
    )
    call = backend.chat("Hi", tools=[get_weather]).tool_calls[0]
    assert call.args == {"city": "Lisbon"} and call.tool is not None and call.tool.function is get_weather
    assert ToolCall("c", "f", "").args == {}


def test_without_tools_offered_calls_are_not_checked() -> None:
    reply = answering(calls_reply({"id": "c", "function": {"name": "anything", "arguments": "{}"}})).chat(
        "Hi"
    )
    assert reply.tool_calls == [ToolCall("c", "anything", "{}")]


def test_a_text_reply_has_no_calls_and_parses_its_response_format() -> None:
    reply = FunctionBackend(lambda m, p: '{"a": 1}').chat(
        "Hi", tools=[get_weather], response_format={"type": "object"}
    )
    assert reply.tool_calls == [] and reply.parsed == {"a": 1}
    calls = answering(
        calls_reply({"id": "c", "function": {"name": "get_weather", "arguments": '{"city": "x"}'}})
    )
    assert calls.chat("Hi", tools=[get_weather], response_format={"type": "object"}).parsed is None


def test_streams_settle_calls_as_replies_do() -> None:
    fragments = [
        {"index": 0, "function": {"name": "get_weather", "arguments": '{"city": '}},
        {"index": 0, "function": {"arguments": '"Oslo"}'}},
    ]
    backend = FunctionBackend(lambda m, p: [_delta(f) for f in fragments])
    stream = backend.stream("Hi", tools=[get_weather])
    final = stream.final()
    assert final.tool_calls == [ToolCall("call_0", "get_weather", '{"city": "Oslo"}')]
    assert final.finish_reason == "tool_calls"


def _delta(fragment: dict[str, Any]) -> Any:
    from llmclient import StreamDelta

    return StreamDelta(details={"tool_calls": [fragment]})


# -- history -------------------------------------------------------------------------------------------


def test_reply_message_and_tool_result_make_the_history_openai_expects() -> None:
    reply = answering(
        calls_reply({"id": "call_9", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}})
    )
    reply_message = reply.chat("Hi", tools=[get_weather]).message
    result = tool_result(reply_message.tool_calls[0], {"temp": 21})  # type: ignore[index]
    assert reply_message.to_dict() == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_9",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
            }
        ],
    }
    assert result.to_dict() == {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call_9"}
    assert ChatResponse(text="Hello").message == Message(role="assistant", content="Hello")


def test_tool_results_encode_values_as_json_unless_text() -> None:
    @dataclasses.dataclass
    class Point:
        x: int

    call = ToolCall("c", "f")
    assert tool_result(call, "plain").content == "plain"
    assert tool_result(call, Order(dish="soup", quantity=2)).content == '{"dish": "soup", "quantity": 2}'
    assert tool_result(call, [Point(1), {2}]).content == '[{"x": 1}, [2]]'


def test_history_calls_are_read_into_tool_calls_and_bad_ones_named() -> None:
    message = to_message(
        Message(role="assistant", tool_calls=[{"id": "a", "function": {"name": "f", "arguments": {"x": 1}}}])
    )  # type: ignore[list-item]
    assert message.tool_calls == [ToolCall("a", "f", '{"x": 1}')]
    with pytest.raises(InvalidRequestError, match=r"messages\[2\].tool_calls\[0\] must be a tool call"):
        to_message({"role": "assistant", "tool_calls": [{"id": "a"}]}, 2)


def test_tool_is_the_exported_form() -> None:
    assert to_tools([Tool("t")]) == (Tool("t"),)
    assert to_tools([]) is None and to_tools(None) is None
