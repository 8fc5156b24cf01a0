"""The vllm-engine backend's pure rules: parameters to SamplingParams keywords, outputs and errors back.

None of these needs vLLM: the mapping is plain dicts, and vLLM's outputs are read by attribute.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import llmclient
from llmclient.backends.vllm_engine.convert import (
    conversation,
    engine_error,
    sampling_kwargs,
    structured_spec,
    token_logprobs,
)
from llmclient.errors import (
    ChatTemplateError,
    ContextWindowExceededError,
    InvalidRequestError,
    ProviderError,
    UnsupportedFeatureError,
)
from llmclient.structured import output_format
from llmclient.types import GenerationParams, Message


def params(**options: object) -> GenerationParams:
    return GenerationParams.from_options(options)


def test_temperature_zero_is_greedy_and_max_new_tokens_is_max_tokens() -> None:
    kwargs = sampling_kwargs(params(temperature=0, max_new_tokens=12), {})
    assert kwargs == {"temperature": 0.0, "max_tokens": 12}


def test_unset_values_follow_the_model_and_an_unset_temperature_is_greedy() -> None:
    assert sampling_kwargs(params(), {})["temperature"] == 0.0
    model = {"temperature": 0.6, "top_p": 0.9, "max_tokens": 4096, "repetition_penalty": 1.1}
    kwargs = sampling_kwargs(params(), model)
    assert kwargs["temperature"] == 0.6 and kwargs["top_p"] == 0.9 and kwargs["repetition_penalty"] == 1.1
    assert kwargs["max_tokens"] == 256  # llmclient's default, not the model's max_new_tokens
    assert sampling_kwargs(params(temperature=0.2, top_p=0.5, top_k=40), model) == {
        **kwargs,
        "temperature": 0.2,
        "top_p": 0.5,
        "top_k": 40,
    }


def test_stop_seed_and_extra_pass_through() -> None:
    kwargs = sampling_kwargs(params(stop="\n", seed=7, extra={"min_p": 0.05}), {})
    assert kwargs["stop"] == ["\n"] and kwargs["seed"] == 7 and kwargs["min_p"] == 0.05


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"logprobs": True}, 0),
        ({"top_logprobs": 3}, 3),
        ({"logprobs": True, "top_logprobs": 5}, 5),
        ({"logprobs": False, "top_logprobs": 3}, None),
        ({}, None),
    ],
)
def test_logprobs_become_the_number_of_alternatives(options: dict[str, object], expected: int | None) -> None:
    assert sampling_kwargs(params(**options), {}).get("logprobs") == expected


@pytest.mark.parametrize("key", ["max_tokens", "temperature", "structured_outputs", "n"])
def test_extra_cannot_set_what_a_parameter_sets(key: str) -> None:
    with pytest.raises(InvalidRequestError, match=key):
        sampling_kwargs(params(extra={key: 1}), {})


def test_structured_output_specs() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert structured_spec(None) is None
    assert structured_spec(output_format(schema)) == {"json": schema, "disable_additional_properties": True}
    assert structured_spec(output_format(llmclient.Choice(["yes", "no"]))) == {"choice": ["yes", "no"]}
    assert structured_spec(output_format(llmclient.Regex(r"\d+"))) == {"regex": r"\d+"}
    assert structured_spec(output_format(llmclient.JSON)) == {"json_object": True}


def test_conversation_speaks_developer_as_system_and_joins_text_parts() -> None:
    parts = [{"type": "text", "text": "Name three"}, {"type": "text", "text": "colours."}]
    image = [{"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": "x"}}]
    turns = conversation(
        [
            Message(role="developer", content="Be brief."),
            Message(role="user", content=parts),
            Message(role="assistant", content=None),
            Message(role="user", content=image),
        ]
    )
    assert turns == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name three colours."},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": image},
    ]


@dataclass
class Logprob:  # vLLM's vllm.logprobs.Logprob, field for field
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


def test_token_logprobs_take_the_chosen_token_and_the_ranked_alternatives() -> None:
    entries = [
        {5: Logprob(-0.1, 1, "Hi"), 6: Logprob(-2.5, 2, "Hello")},
        {9: Logprob(-3.0, 4, "!"), 7: Logprob(-0.2, 1, " there"), 8: Logprob(-1.9, 2, ",")},
    ]
    out = token_logprobs([5, 9], entries, top_n=2)
    assert [(t.token, t.logprob) for t in out] == [("Hi", -0.1), ("!", -3.0)]
    assert out[0].top == [("Hi", -0.1), ("Hello", -2.5)]
    assert out[1].top == [(" there", -0.2), (",", -1.9)]  # the chosen token, ranked 4th, is not a top one
    assert [t.top for t in token_logprobs([5], entries[:1], top_n=0)] == [[]]
    assert token_logprobs([5], None, top_n=0) == []


class VLLMValidationError(Exception):  # vLLM's request errors derive from this name, not ValueError
    pass


class VLLMClientError(VLLMValidationError):
    pass


class TemplateError(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "fmt", "expected"),
    [
        (
            ValueError("The decoder prompt (length 9000) is longer than the maximum model length of 8192."),
            None,
            ContextWindowExceededError,
        ),
        (
            VLLMClientError("This model's maximum context length is 2048 tokens. However, your prompt ..."),
            None,
            ContextWindowExceededError,
        ),
        (TemplateError("unknown tag"), None, ChatTemplateError),
        (ValueError("xgrammar cannot compile the JSON schema"), {"type": "object"}, UnsupportedFeatureError),
        (ValueError("top_p must be in (0, 1]"), None, InvalidRequestError),
        (VLLMClientError("bad request"), None, InvalidRequestError),
        (RuntimeError("EngineCore died"), None, ProviderError),
    ],
)
def test_engine_errors_are_typed(exc: Exception, fmt: object, expected: type[Exception]) -> None:
    error = engine_error(exc, params(response_format=fmt) if fmt else params())
    assert type(error) is expected
    assert str(exc) in str(error)


def test_a_structured_word_without_a_format_is_a_plain_request_error() -> None:
    assert type(engine_error(ValueError("bad json in extra"), params())) is InvalidRequestError
