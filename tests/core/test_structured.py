"""response_format: one meaning on every backend, checked by the base class whatever made the text."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel

import llmclient
from llmclient import Choice, GenerationParams, Regex, StructuredOutputError
from llmclient.structured import OutputFormat, output_format
from llmclient.testing import FunctionBackend


class Order(BaseModel):
    dish: str
    sentiment: Literal["positive", "negative", "mixed"]
    late: bool


ORDER_SCHEMA = {
    "type": "object",
    "properties": {"dish": {"type": "string"}, "rating": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["dish", "rating"],
}


def replying(text: str, finish_reason: str = "stop") -> FunctionBackend:
    def answer(messages: Any, params: GenerationParams) -> llmclient.ChatResponse:
        return llmclient.ChatResponse(text=text, finish_reason=finish_reason)  # type: ignore[arg-type]

    return FunctionBackend(answer)


def test_a_pydantic_model_gives_an_instance() -> None:
    with replying('{"dish": "pizza", "sentiment": "mixed", "late": true}') as backend:
        reply = backend.chat("order 1", response_format=Order)
    assert reply.parsed == Order(dish="pizza", sentiment="mixed", late=True)


def test_a_reply_that_breaks_the_model_names_the_field_and_keeps_the_text() -> None:
    text = '{"dish": "pizza", "sentiment": "great", "late": true}'
    with replying(text) as backend, pytest.raises(StructuredOutputError, match="sentiment") as caught:
        backend.chat("order 1", response_format=Order)
    assert caught.value.text == text and caught.value.errors[0].startswith("sentiment:")
    assert not caught.value.retryable


def test_a_json_schema_gives_a_dict_and_reports_every_violation() -> None:
    with replying('{"dish": "soup", "rating": 4}') as backend:
        assert backend.chat("x", response_format=ORDER_SCHEMA).parsed == {"dish": "soup", "rating": 4}
    with replying('{"rating": 9}') as backend, pytest.raises(StructuredOutputError) as caught:
        backend.chat("x", response_format=ORDER_SCHEMA)
    assert len(caught.value.errors) == 2
    assert any("'dish' is a required property" in e for e in caught.value.errors)
    assert any(e.startswith("rating: 9 is greater than the maximum") for e in caught.value.errors)


def test_json_accepts_any_object_and_refuses_anything_else() -> None:
    with replying('{"a": [1, 2]}') as backend:
        assert backend.chat("x", response_format=llmclient.JSON).parsed == {"a": [1, 2]}
    with replying("[1, 2]") as backend, pytest.raises(StructuredOutputError, match="not an object"):
        backend.chat("x", response_format=llmclient.JSON)
    with replying("Sure! {") as backend, pytest.raises(StructuredOutputError, match="invalid JSON"):
        backend.chat("x", response_format=llmclient.JSON)


@pytest.mark.parametrize("text", ["yes", " yes\n", '{"value": "yes"}', '"yes"'])
def test_a_choice_is_the_bare_option_whether_sent_bare_or_wrapped(text: str) -> None:
    with replying(text) as backend:
        assert backend.chat("x", response_format=Choice(["yes", "no"])).parsed == "yes"


def test_a_choice_outside_the_options_fails() -> None:
    with replying("maybe") as backend, pytest.raises(StructuredOutputError, match=r"one of \['yes', 'no'\]"):
        backend.chat("x", response_format=Choice(["yes", "no"]))


def test_a_regex_must_match_the_whole_reply() -> None:
    date = Regex(r"\d{4}-\d{2}-\d{2}")
    with replying("2026-11-29") as backend:
        assert backend.chat("x", response_format=date).parsed == "2026-11-29"
    with replying("on 2026-11-29") as backend, pytest.raises(StructuredOutputError, match="matching"):
        backend.chat("x", response_format=date)


def test_a_reply_cut_by_max_new_tokens_says_to_raise_it() -> None:
    with replying('{"dish": "pi', "length") as backend, pytest.raises(StructuredOutputError) as caught:
        backend.chat("x", response_format=ORDER_SCHEMA, max_new_tokens=5)
    assert "cut by max_new_tokens" in str(caught.value) and "raise max_new_tokens" in str(caught.value)
    assert caught.value.finish_reason == "length"


def test_no_response_format_means_parsed_is_none() -> None:
    with replying('{"a": 1}') as backend:
        assert backend.chat("x").parsed is None


async def test_async_streams_and_batches_parse_the_same_way() -> None:
    backend = FunctionBackend(lambda messages, params: ['{"dish": ', '"tea", "rating": 5}'])
    async with backend:
        assert (await backend.achat("x", response_format=ORDER_SCHEMA)).parsed == {"dish": "tea", "rating": 5}
        stream = backend.astream("x", response_format=ORDER_SCHEMA)
        assert (await stream.final()).parsed == {"dish": "tea", "rating": 5}
        [reply] = await backend.achat_many(["x"], response_format=ORDER_SCHEMA)
        assert reply.parsed == {"dish": "tea", "rating": 5}
    sync = FunctionBackend(lambda messages, params: ['{"dish": ', '"tea", "rating": 5}'])
    with sync, sync.stream("x", response_format=ORDER_SCHEMA) as stream:
        assert stream.final().parsed == {"dish": "tea", "rating": 5}


def test_a_batch_item_that_does_not_validate_holds_its_error() -> None:
    backend = FunctionBackend(lambda messages, params: messages[-1].text)
    with backend:
        results = backend.chat_many(
            ['{"dish": "a", "rating": 1}', "nope"], response_format=ORDER_SCHEMA, return_exceptions=True
        )
        assert isinstance(results[0], llmclient.ChatResponse) and results[0].parsed["dish"] == "a"
        assert isinstance(results[1], StructuredOutputError) and results[1].text == "nope"
        with pytest.raises(StructuredOutputError):
            backend.chat_many(["nope"], response_format=ORDER_SCHEMA)


def test_response_format_comes_from_the_configured_defaults() -> None:
    config = {"type": "fn", "model": "m", "defaults": {"response_format": ORDER_SCHEMA}}
    llmclient.register(
        "fn", lambda c: FunctionBackend(lambda m, p: '{"dish": "x", "rating": 2}', defaults=c.defaults)
    )
    try:
        with llmclient.load(config) as backend:
            assert backend.chat("x").parsed == {"dish": "x", "rating": 2}
    finally:
        llmclient.registry.unregister("fn")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (42, "must be a pydantic model class, a JSON Schema dict, llmclient.JSON"),
        ({"type": "objekt"}, "not a valid JSON Schema at type"),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "no 'schema' dict"),
        (str, "must be a pydantic model class"),
    ],
)
def test_a_response_format_that_is_none_of_the_kinds_is_refused_before_sending(
    value: Any, match: str
) -> None:
    backend = FunctionBackend(lambda messages, params: pytest.fail("nothing should be sent"))
    with backend, pytest.raises(llmclient.InvalidRequestError, match=match):
        backend.chat("x", response_format=value)


def test_choice_and_regex_refuse_bad_arguments() -> None:
    for bad in ([], "yes", ["a", "a"], [""]):
        with pytest.raises(llmclient.InvalidRequestError, match="Choice"):
            Choice(bad)
    with pytest.raises(llmclient.InvalidRequestError, match="does not compile"):
        Regex("(")


def test_openai_shaped_dicts_are_accepted_and_equal_formats_share_a_digest() -> None:
    wrapped = {"type": "json_schema", "json_schema": {"name": "order", "schema": ORDER_SCHEMA}}
    assert output_format(wrapped).schema == ORDER_SCHEMA and output_format(wrapped).name == "order"
    assert output_format({"type": "json_object"}).kind == "json_object"
    assert output_format(ORDER_SCHEMA).digest == output_format(dict(ORDER_SCHEMA)).digest
    assert output_format(ORDER_SCHEMA).digest != output_format(llmclient.JSON).digest
    assert isinstance(output_format(Order), OutputFormat) and output_format(Order).model is Order


def test_the_format_is_part_of_the_parameters_as_plain_json() -> None:
    params = GenerationParams.from_options({"response_format": Choice(["a", "b"]), "max_new_tokens": 3})
    assert params.to_dict() == {
        "max_new_tokens": 3,
        "response_format": {"type": "choice", "choices": ["a", "b"]},
    }
