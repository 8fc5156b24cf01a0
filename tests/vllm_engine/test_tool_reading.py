"""The vllm-engine backend's tool rules without an engine: what a request becomes, and how a stream's
text is held back and its calls sent, on the real ``smollm2`` profile.

The engine's tokenizer only lends its turn-end tokens and, where it has one, its response parser;
a plain object has neither, as a tokenizer without them does.
"""

from __future__ import annotations

import json

import pytest

from llmclient.backends.vllm_engine import VLLMEngineBackend
from llmclient.backends.vllm_engine.settings import VLLMEngineSettings
from llmclient.backends.vllm_engine.tooling import ToolDeltas, ToolReading, ToolSetup
from llmclient.errors import ConfigError, UnsupportedFeatureError
from llmclient.tools.profiles import PROFILES
from llmclient.types import ChatRequest, GenerationParams, Message, StreamDelta

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def request(**options: object) -> ChatRequest:
    return ChatRequest(
        messages=(Message(role="user", content="Weather in Lisbon?"),),
        params=GenerationParams.from_options(options),
    )


def setup(model: str = "smollm2", *, guidance: bool = False, template: str | None = CHATML) -> ToolSetup:
    return ToolSetup(object(), template, model_name=model, configured=None, guidance=guidance)


def test_a_model_without_tools_in_its_template_is_shown_them_by_its_profile() -> None:
    prepared = setup().prepare(request(tools=[WEATHER]))
    assert prepared is not None and prepared.tools is None and prepared.grammar is None
    system = prepared.conversation[0]
    assert system["role"] == "system" and "<tools>[{" in system["content"]
    assert prepared.reading is not None and prepared.reading.profile is PROFILES["smollm2"]
    assert setup().prepare(request()) is None


def test_forced_calls_are_constrained_with_guidance_and_refused_without() -> None:
    guided = setup(guidance=True).prepare(request(tools=[WEATHER], tool_choice="required"))
    assert guided is not None and guided.grammar is not None and "get_weather" in guided.grammar
    with pytest.raises(UnsupportedFeatureError, match='backend = "guidance"'):
        setup().prepare(request(tools=[WEATHER], tool_choice="get_weather"))
    none = setup().prepare(request(tools=[WEATHER], tool_choice="none"))
    assert none is not None and none.reading is None and "<tools>" not in json.dumps(none.conversation)


def test_a_model_with_neither_a_tools_template_nor_a_profile_is_refused() -> None:
    with pytest.raises(UnsupportedFeatureError, match="Set tool_profile"):
        setup("some/model").prepare(request(tools=[WEATHER]))


def test_a_stream_holds_back_a_call_and_sends_it_last() -> None:
    deltas = ToolDeltas(ToolReading(PROFILES["smollm2"], None, ("<|im_end|>",), active=True))
    pieces = [
        "Let me check. <tool",
        '_call>[{"name": "get_weather", ',
        '"arguments": {"city": "Lisbon"}}]</tool_call>',
    ]
    shown = [deltas.feed(StreamDelta(text=p)).text for p in pieces]
    last = deltas.feed(StreamDelta(text="<|im_end|>", finish_reason="stop"))
    assert shown == ["Let me check.", "", ""] and last.text == ""
    assert last.finish_reason == "tool_calls"
    assert last.details["tool_calls"] == [
        {
            "index": 0,
            "id": "",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Lisbon"}'},
        }
    ]


def test_tool_profile_is_a_checked_setting_and_guidance_keeps_objects_closed() -> None:
    with pytest.raises(ConfigError, match="unknown tool profile"):
        VLLMEngineBackend("smollm2", tool_profile="hermes3")
    guided = VLLMEngineSettings(engine_args={"structured_outputs_config": {"backend": "guidance"}})
    assert guided.engine_kwargs("m")["structured_outputs_config"] == {
        "disable_additional_properties": True,
        "backend": "guidance",
    }
    mine = VLLMEngineSettings(
        engine_args={
            "structured_outputs_config": {"backend": "guidance", "disable_additional_properties": False}
        }
    )
    assert mine.engine_kwargs("m")["structured_outputs_config"]["disable_additional_properties"] is False
