"""A tiny model whose chat template reads ``tools``: tools and history go through the template, its
calls parse, and a model with neither such a template nor a profile is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import llmclient
from llmclient.errors import ConfigError, UnsupportedFeatureError
from llmclient.tools.profiles import PROFILES
from llmclient.tools.templates import reads_tools

pytest.importorskip("torch")

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def qwen(tiny_models: dict[str, Path]) -> Any:
    from llmclient.backends.huggingface import HuggingFaceBackend

    backend = HuggingFaceBackend(str(tiny_models["qwen_tools"]), device="cpu", load="eager")
    yield backend
    backend.close()


def test_template_reading_tools_is_detected() -> None:
    assert reads_tools("{% for t in tools %}{{ t }}{% endfor %}")
    assert not reads_tools("{% for m in messages %}{{ m.content }}{% endfor %}")
    assert not reads_tools("{% set tools = [] %}{{ tools }}")


def test_template_renders_tools_and_history(qwen: Any) -> None:
    call = {
        "id": "call_7",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Lisbon"}'},
    }
    messages = [
        {"role": "user", "content": "Weather in Lisbon?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "21C", "tool_call_id": "call_7"},
    ]
    text = qwen.render_prompt(messages, tools=[TOOL])
    assert '<tools>{"type": "function", "function": {"name": "get_weather"' in text
    assert '{"name": "get_weather", "arguments": {"city": "Lisbon"}}' in text  # a dict, not a string
    assert "<tool_response>\n21C\n</tool_response>" in text
    assert "<tools>" not in qwen.render_prompt(messages)


def test_calls_parse_from_a_known_reply(qwen: Any) -> None:
    engine = qwen._ensure()
    request = qwen.prepare("Weather?", {"tools": [TOOL]})
    plan = engine.tools.plan(request, engine.prompts)
    call = '{"name": "get_weather", "arguments": {"city": "Lisbon"}}'
    reply = f"Let me look.<tool_call>\n{call}\n</tool_call><|im_end|>"
    ids = qwen.tokenizer.encode(reply, add_special_tokens=False)
    text, calls, stopped = plan.parse(qwen.tokenizer, ids, ())
    assert text == "Let me look." and not stopped
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Lisbon"})]


def test_required_call_is_schema_valid_on_a_random_model(qwen: Any) -> None:
    reply = qwen.chat("Weather?", tools=[TOOL], tool_choice="required", max_new_tokens=60, temperature=0)
    if reply.finish_reason == "length":
        pytest.skip("the random model ran out of tokens inside the call")
    assert reply.finish_reason == "tool_calls" and reply.tool_calls[0].name == "get_weather"
    assert isinstance(reply.tool_calls[0].args["city"], str)


def test_model_without_template_tools_or_profile_is_refused(llama_backend: Any) -> None:
    with pytest.raises(UnsupportedFeatureError, match="tool_profile"):
        llama_backend.chat("Weather?", tools=[TOOL], max_new_tokens=2)


def test_tool_profile_setting_is_checked() -> None:
    from llmclient.backends.huggingface import HuggingFaceBackend

    with pytest.raises(ConfigError, match="tool_profile"):
        HuggingFaceBackend("smollm2", tool_profile="nope")


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profiles_read_what_they_write(name: str) -> None:
    profile = PROFILES[name]
    calls = [llmclient.ToolCall(id="", name="f", arguments='{"a": 1}')]
    text, parsed = profile.parse(profile.write(calls))
    assert text == "" and [(c.name, json.loads(c.arguments)) for c in parsed] == [("f", {"a": 1})]
