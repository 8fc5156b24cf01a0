"""Structured output on the remote backend, over real loopback HTTP: the ``response_format`` sent for
each kind, OpenRouter's ``require_parameters``, a refusing model, the prompt fallback and its retry,
streams, and a recorded structured reply replayed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel
from remote_support import API_KEY, FAST_RETRY, Caller, Script

import llmclient
from llmclient.errors import StructuredOutputError, UnsupportedFeatureError
from llmclient.testing import cassette
from llmclient.testing.server import OpenAIHandler, Request, completion, error_reply, json_reply


class Address(BaseModel):
    city: str
    zip_code: str | None = None


class Order(BaseModel):
    dish: str
    late: bool = False
    address: Address


ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "address": {
            "properties": {
                "city": {"type": "string"},
                "zip_code": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
            "required": ["city", "zip_code"],
            "type": "object",
            "additionalProperties": False,
        },
        "dish": {"type": "string"},
        "late": {"type": ["boolean", "null"]},
    },
    "required": ["dish", "late", "address"],
    "additionalProperties": False,
}
"""``Order`` as strict mode gets it: ``$defs`` inlined, titles kept, ``default`` gone, ``late`` (optional,
never null in the model) required but nullable."""

ORDER_REPLY = '{"dish": "ramen", "late": null, "address": {"city": "Lyon", "zip_code": null}}'


def _without_titles(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _without_titles(v) for k, v in schema.items() if k != "title"}
    if isinstance(schema, list):
        return [_without_titles(v) for v in schema]
    return schema


def test_a_pydantic_model_is_sent_as_a_strict_schema_and_parsed(serve, make_backend, call: Caller) -> None:
    server = serve(OpenAIHandler(text=ORDER_REPLY))
    reply = call.chat(make_backend(server), response_format=Order)
    sent = server.requests[-1].json()["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["name"] == "Order" and sent["json_schema"]["strict"] is True
    assert _without_titles(sent["json_schema"]["schema"]) == ORDER_SCHEMA
    # null for the optional, non-nullable `late` reads as "left out": the model's default applies
    assert reply.parsed == Order(dish="ramen", late=False, address=Address(city="Lyon"))


def test_a_dict_schema_is_closed_and_its_optional_property_made_nullable(
    serve, make_backend, call: Caller
) -> None:
    schema = {
        "title": "Rating",
        "type": "object",
        "properties": {
            "stars": {"type": "integer", "minimum": 1},
            "note": {"type": "string", "minLength": 2},
        },
        "required": ["stars"],
    }
    server = serve(OpenAIHandler(text='{"stars": 4, "note": null}'))
    reply = call.chat(make_backend(server), response_format=schema)
    assert server.requests[-1].json()["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "Rating",
            "schema": {
                "title": "Rating",
                "type": "object",
                "properties": {
                    "stars": {"type": "integer", "minimum": 1},
                    "note": {"type": ["string", "null"], "description": "minLength=2"},
                },
                "required": ["stars", "note"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    }
    assert reply.parsed == {"stars": 4}


def test_json_is_sent_as_json_object(serve, make_backend, call: Caller) -> None:
    server = serve(OpenAIHandler(text='{"any": ["shape"]}'))
    reply = call.chat(make_backend(server), "Answer in JSON", response_format=llmclient.JSON)
    assert server.requests[-1].json()["response_format"] == {"type": "json_object"}
    assert reply.parsed == {"any": ["shape"]}


def test_choice_and_regex_are_sent_as_an_object_with_one_value(serve, make_backend, call: Caller) -> None:
    server = serve(OpenAIHandler(text='{"value": "no"}'))
    backend = make_backend(server)
    assert call.chat(backend, response_format=llmclient.Choice(["yes", "no"])).parsed == "no"
    assert server.requests[-1].json()["response_format"]["json_schema"]["schema"] == {
        "type": "object",
        "properties": {"value": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["value"],
        "additionalProperties": False,
    }
    server2 = serve(OpenAIHandler(text='{"value": "2024-05-01"}'))
    regex = llmclient.Regex(r"\d{4}-\d{2}-\d{2}")
    assert call.chat(make_backend(server2), response_format=regex).parsed == "2024-05-01"
    value = server2.requests[-1].json()["response_format"]["json_schema"]["schema"]["properties"]["value"]
    assert value == {"type": "string", "pattern": r"^(?:\d{4}-\d{2}-\d{2})$"}


def test_a_schema_without_an_object_at_its_root_is_refused_before_sending(serve, make_backend) -> None:
    server = serve(OpenAIHandler())
    with pytest.raises(UnsupportedFeatureError, match=r"object at the schema's root.*structured_fallback"):
        make_backend(server).chat("Hi", response_format={"type": "array", "items": {"type": "string"}})
    assert server.requests == []


def test_openrouter_requires_the_parameters_merged_with_the_routing(serve, built) -> None:
    server = serve(OpenAIHandler(text='{"value": "yes"}'))
    spec = {"type": "openrouter", "model": "m", "base_url": server.base_url, "api_key": API_KEY}
    backend = built(spec, provider={"order": ["groq"]})
    backend.chat("Hi", response_format=llmclient.Choice(["yes", "no"]))
    assert server.requests[-1].json()["provider"] == {"require_parameters": True, "order": ["groq"]}
    backend.chat("Hi")  # no schema: routing as configured, nothing added
    assert server.requests[-1].json()["provider"] == {"order": ["groq"]}
    off = built(spec, require_parameters=False)
    off.chat("Hi", response_format=llmclient.JSON)
    assert "provider" not in server.requests[-1].json()
    theirs = built(spec, provider={"require_parameters": False})  # the user's own routing wins
    theirs.chat("Hi", response_format=llmclient.JSON)
    assert server.requests[-1].json()["provider"] == {"require_parameters": False}


REFUSALS = [
    "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model. Learn "
    "more about supported models at the Structured Outputs guide: https://platform.openai.com/docs/guides/"
    "structured-outputs",
    "response_format json_schema is not supported by this model",
    "This response_format type is unavailable now",
    "The provided JSON schema contains features not supported by xgrammar.",
]


@pytest.mark.parametrize("message", REFUSALS)
def test_a_model_that_refuses_the_schema_is_an_unsupported_feature_error(
    serve, make_backend, call: Caller, message: str
) -> None:
    server = serve(lambda request: error_reply(400, message, param="response_format"))
    with pytest.raises(UnsupportedFeatureError, match='structured_fallback = "prompt"') as caught:
        call.chat(make_backend(server), response_format=Order)
    assert caught.value.status_code == 400
    assert len(server.requests) == 1  # final: not retried


def test_openrouter_without_a_provider_for_the_parameters_is_unsupported(serve, make_backend) -> None:
    message = "No endpoints found that can handle the requested parameters."
    server = serve(lambda request: error_reply(404, message))
    with pytest.raises(UnsupportedFeatureError, match="structured_fallback"):
        make_backend(server).chat("Hi", response_format=llmclient.JSON)


def _refusing(replies: list[str]) -> Script:
    """A server that refuses ``response_format`` and answers the prompted requests with ``replies``."""
    texts = iter(replies)

    def answer(request: Request) -> Any:
        if "response_format" in request.json():
            return error_reply(400, REFUSALS[0], param="response_format")
        return json_reply(completion(next(texts)))

    return Script([answer])


def test_prompt_fallback_sends_the_schema_in_the_system_message(serve, make_backend, call: Caller) -> None:
    script = _refusing(['```json\n{"dish": "pho", "address": {"city": "Hue"}}\n```', '{"dish": "x"}', "{}"])
    server = serve(script)
    backend = make_backend(server, structured_fallback="prompt")
    messages = [{"role": "system", "content": "You read orders."}, {"role": "user", "content": "Pho in Hue"}]
    reply = call.chat(backend, messages, response_format=Order)
    assert reply.parsed == Order(dish="pho", address=Address(city="Hue"))
    first, second = (r.json() for r in script.seen)
    assert "response_format" in first and "response_format" not in second
    system = second["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("You read orders.\n\n")
    assert "JSON Schema (Order)" in system["content"] and '"dish"' in system["content"]
    assert second["messages"][1:] == messages[1:]
    # the refusal is remembered: the next call goes prompted at once (an invalid reply, one retry)
    with pytest.raises(StructuredOutputError):
        call.chat(backend, "again", response_format=Order)
    assert ["response_format" in r.json() for r in script.seen[2:]] == [False, False]


def test_prompt_fallback_resends_an_invalid_reply_with_the_validation_error(
    serve, make_backend, call: Caller
) -> None:
    script = _refusing(['{"dish": "pho"}', '{"dish": "pho", "address": {"city": "Hue"}}'])
    server = serve(script)
    reply = call.chat(make_backend(server, structured_fallback="prompt"), "Pho", response_format=Order)
    assert reply.parsed.address.city == "Hue"
    prompted = [r.json() for r in script.seen if "response_format" not in r.json()]
    assert len(prompted) == 2  # the first answer, then the corrected one
    retry = prompted[1]["messages"]
    assert retry[-2] == {"role": "assistant", "content": '{"dish": "pho"}'}
    assert retry[-1]["role"] == "user" and "address: Field required" in retry[-1]["content"]


def test_the_last_invalid_reply_raises_structured_output_error(serve, make_backend, call: Caller) -> None:
    script = _refusing(["not json", "still not", "nor this"])
    server = serve(script)
    backend = make_backend(server, structured_fallback="prompt", structured_retries=2)
    with pytest.raises(StructuredOutputError, match="invalid JSON") as caught:
        call.chat(backend, "Pho", response_format=Order)
    assert caught.value.text == "nor this"
    assert len(script.seen) == 4  # refused, then the prompted reply and two retries


def test_chat_many_falls_back_per_item(serve, make_backend) -> None:
    server = serve(_refusing(["yes"] * 3))
    backend = make_backend(server, structured_fallback="prompt")
    choice = llmclient.Choice(["yes", "no"])
    replies = backend.chat_many(["a", "b", "c"], response_format=choice, concurrency=1)
    assert [r.parsed for r in replies] == ["yes", "yes", "yes"]


def test_a_stream_with_a_schema_is_parsed_in_final(serve, make_backend, call: Caller) -> None:
    server = serve(OpenAIHandler(text=ORDER_REPLY))
    pieces, final = call.stream(make_backend(server), response_format=Order)
    assert "".join(pieces) == ORDER_REPLY
    assert final.parsed == Order(dish="ramen", address=Address(city="Lyon"))
    assert server.requests[-1].json()["response_format"]["type"] == "json_schema"


def test_a_stream_falls_back_to_the_prompt(serve, make_backend, call: Caller) -> None:
    def answer(request: Request) -> Any:
        if "response_format" in request.json():
            return error_reply(400, REFUSALS[1])
        return OpenAIHandler(text="no")(request)

    server = serve(answer)
    backend = make_backend(server, structured_fallback="prompt")
    _, final = call.stream(backend, response_format=llmclient.Choice(["yes", "no"]))
    assert final.parsed == "no"
    assert "one of these" in server.requests[-1].json()["messages"][0]["content"]


def test_a_recorded_structured_reply_replays_with_parsed(serve, make_backend, tmp_path) -> None:
    path = tmp_path / "orders.yaml"
    server = serve(OpenAIHandler(text=ORDER_REPLY))
    with cassette(path, make_backend(server), mode="once") as recording:
        recorded = recording.chat("Ramen in Lyon", response_format=Order)
    assert recorded.parsed == Order(dish="ramen", address=Address(city="Lyon"))
    server.stop()
    with cassette(path, model="test-model", backend_type="openai-compatible") as replay:
        replayed = replay.chat("Ramen in Lyon", response_format=Order)
    assert replayed.parsed == recorded.parsed
    assert json.loads(replayed.text)["dish"] == "ramen"


def test_structured_retries_must_not_be_negative(serve) -> None:
    from llmclient.backends.openai import OpenAICompatibleBackend

    with pytest.raises(llmclient.ConfigError, match="structured_retries"):
        OpenAICompatibleBackend("m", base_url="http://x/v1", structured_retries=-1, retry=FAST_RETRY)
