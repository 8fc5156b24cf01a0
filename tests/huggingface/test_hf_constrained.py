"""Constrained decoding on the tiny random models: the grammar, not the model, makes the reply valid.

The tiny models write gibberish, so every valid reply here is the mask's doing. Their schemas use
finite values (enums, booleans, bounded integers) so that a reply ends within a few tokens.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

import llmclient
from llmclient import Choice, Regex, StructuredOutputError, UnsupportedFeatureError
from llmclient.backends.huggingface import HuggingFaceBackend

pytest.importorskip("torch")
pytest.importorskip("llguidance")

import torch

from llmclient.backends.huggingface.grammars import closed
from llmclient.structured import output_format

VERDICT = {
    "type": "object",
    "properties": {
        "sentiment": {"enum": ["positive", "negative", "mixed"]},
        "late": {"type": "boolean"},
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["sentiment", "late", "rating"],
}
OPTIONS: dict[str, Any] = {"max_new_tokens": 60, "temperature": 0}


def spy_batches(backend: Any, monkeypatch: pytest.MonkeyPatch) -> list[list[bool]]:
    """Record each batch the backend generates, as which of its rows are constrained."""
    generator = backend._engine.generator
    real = generator.run
    batches: list[list[bool]] = []

    def run(jobs: Any, streamer: Any = None) -> Any:
        batches.append([job.grammar is not None for job in jobs])
        return real(jobs, streamer)

    monkeypatch.setattr(generator, "run", run)
    return batches


async def _mixed(backend: Any) -> list[Any]:
    return list(
        await asyncio.gather(
            backend.achat("Hello there", response_format=VERDICT, **OPTIONS),
            backend.achat(
                "Le café est très chaud.", response_format=Choice(["yes", "no", "yes sir"]), **OPTIONS
            ),
            backend.achat("Hi", response_format=Regex(r"[0-9]{3}-[a-z]{2}"), **OPTIONS),
            backend.achat("What is the capital of France?", max_new_tokens=12, temperature=0),
        )
    )


async def test_rows_with_different_formats_and_a_free_row_share_one_batch(
    llama_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    free_alone = llama_backend.chat("What is the capital of France?", max_new_tokens=12, temperature=0)
    batches = spy_batches(llama_backend, monkeypatch)
    verdict, choice, regex, free = await _mixed(llama_backend)
    assert [sorted(b) for b in batches] == [[False, True, True, True]]  # one batch, three constrained rows
    assert set(verdict.parsed) <= set(VERDICT["properties"]) and 1 <= verdict.parsed["rating"] <= 5
    assert json.loads(verdict.text) == verdict.parsed  # the reply is exactly the constrained text
    assert choice.parsed in ("yes", "no", "yes sir") and choice.text == choice.parsed
    assert re.fullmatch(r"[0-9]{3}-[a-z]{2}", regex.text)
    assert all(r.finish_reason == "stop" for r in (verdict, choice, regex))
    assert (free.text, free.usage, free.finish_reason) == (
        free_alone.text,
        free_alone.usage,
        free_alone.finish_reason,
    )


def test_a_reply_ends_where_its_grammar_does(llama_backend: Any) -> None:
    reply = llama_backend.chat("Hi", response_format=Regex("[0-9]{4}"), **OPTIONS)
    assert re.fullmatch("[0-9]{4}", reply.text) and reply.parsed == reply.text
    assert reply.usage is not None and reply.usage.completion_tokens <= 4  # no end-of-turn token needed
    assert reply.finish_reason == "stop"


def test_sampled_rows_stay_inside_their_grammars(llama_backend: Any) -> None:
    replies = llama_backend.chat_many(
        ["Hello there", "Hi", "Le café est très chaud.", "東京は日本の首都です。"],
        response_format=VERDICT,
        max_new_tokens=60,
        temperature=1.5,
        top_p=1.0,
    )
    assert all(r.parsed["rating"] in range(1, 6) for r in replies)


def test_a_constrained_reply_cut_by_max_new_tokens_says_so(llama_backend: Any) -> None:
    with pytest.raises(StructuredOutputError, match="cut by max_new_tokens") as caught:
        llama_backend.chat("Hi", response_format=llmclient.JSON, max_new_tokens=6, temperature=0)
    assert caught.value.text.startswith("{") and caught.value.finish_reason == "length"


def test_a_stream_is_constrained_and_its_final_reply_parsed(llama_backend: Any) -> None:
    with llama_backend.stream("Hello there", response_format=VERDICT, **OPTIONS) as stream:
        text = "".join(d.text for d in stream)
        final = stream.final()
    assert json.loads(text) == final.parsed and final.finish_reason == "stop"


async def test_an_async_stream_is_constrained(llama_backend: Any) -> None:
    stream = llama_backend.astream("Hi", response_format=Choice(["alpha", "beta"]), **OPTIONS)
    text = "".join([d.text async for d in stream])
    assert text == (await stream.final()).parsed in ("alpha", "beta")


def test_closing_a_stream_mid_grammar_leaves_the_backend_ready(llama_backend: Any) -> None:
    endless = {"type": "object", "properties": {"story": {"type": "string"}}, "required": ["story"]}
    with llama_backend.stream("Hello there", response_format=endless, max_new_tokens=400) as stream:
        for seen, _ in enumerate(stream, start=1):
            if seen == 3:
                break
    assert llama_backend.chat("Hi", response_format=Choice(["on", "off"]), **OPTIONS).parsed in ("on", "off")


async def test_cancelling_a_constrained_call_does_not_disturb_the_others(llama_backend: Any) -> None:
    endless = {"type": "array", "items": {"type": "integer"}}
    expected = llama_backend.chat("Hello there", response_format=VERDICT, **OPTIONS).parsed
    doomed = asyncio.ensure_future(llama_backend.achat("Hi", response_format=endless, max_new_tokens=400))
    kept = asyncio.ensure_future(llama_backend.achat("Hello there", response_format=VERDICT, **OPTIONS))
    await asyncio.sleep(0)
    doomed.cancel()
    assert (await kept).parsed == expected
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert (await llama_backend.achat("Hello there", response_format=VERDICT, **OPTIONS)).parsed == expected


def test_an_uncompilable_schema_is_refused_before_anything_is_generated(
    llama_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = spy_batches(llama_backend, monkeypatch)
    schema = {"type": "object", "properties": {"when": {"type": "string", "format": "credit-card"}}}
    with pytest.raises(UnsupportedFeatureError, match=r"'format': \"credit-card\" at #/properties/when"):
        llama_backend.chat("Hi", response_format=schema)
    with pytest.raises(UnsupportedFeatureError, match=r"'not'.* at #/properties/a.*Fix: "):
        llama_backend.chat("Hi", response_format={"properties": {"a": {"not": {"type": "null"}}}})
    with pytest.raises(UnsupportedFeatureError, match="backreferences are not supported"):
        llama_backend.chat("Hi", response_format=Regex(r"(a)\1"))
    assert batches == []
    replies = llama_backend.chat_many(
        ["Hi", "Hello"], response_format=schema, return_exceptions=True, max_new_tokens=4
    )
    assert all(isinstance(r, UnsupportedFeatureError) for r in replies) and batches == []


def test_each_format_compiles_once_and_the_tokenizer_is_built_on_first_use(
    tiny_models: dict[str, Path],
) -> None:
    with HuggingFaceBackend(str(tiny_models["llama"]), device="cpu", load="eager") as backend:
        grammars = backend._engine.generator.grammars
        backend.chat("Hi", max_new_tokens=2)
        assert grammars._ll_tokenizer is None  # free text never builds it
        first = grammars.compile(output_format(VERDICT))
        assert grammars.compile(output_format(dict(VERDICT))) is first
        backend.chat("Hi", response_format=VERDICT, **OPTIONS)
        built = grammars._ll_tokenizer
        backend.chat("Hello", response_format=VERDICT, **OPTIONS)
        assert grammars._ll_tokenizer is built and list(grammars._templates) == [first.digest]


@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_models_without_a_pad_token_and_encoder_decoders_are_constrained_too(
    tiny_models: dict[str, Path], name: str
) -> None:
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}" if name == "gpt2" else None
    with HuggingFaceBackend(str(tiny_models[name]), device="cpu", chat_template=template) as backend:
        replies = backend.chat_many(["Hello there", "Hi"], response_format=VERDICT, **OPTIONS)
    assert all(1 <= r.parsed["rating"] <= 5 for r in replies)


def test_wider_logits_than_the_vocabulary_are_forbidden_to_constrained_rows_only(llama_backend: Any) -> None:
    grammars = llama_backend._engine.generator.grammars
    grammar = grammars.compile(output_format(Choice(["yes"])))
    mask = grammars.mask([grammar, None], frozenset({llama_backend.tokenizer.eos_token_id}))
    width = len(llama_backend.tokenizer) + 40
    scores = mask(torch.zeros((2, 1), dtype=torch.long), torch.zeros((2, width)))  # type: ignore[arg-type]
    allowed = torch.isfinite(scores[0]).nonzero().flatten().tolist()
    assert allowed and all(llama_backend.tokenizer.decode([t]) and t < width - 40 for t in allowed)
    assert "yes".startswith(llama_backend.tokenizer.decode([allowed[0]]))
    assert torch.isfinite(scores[1]).all()


def test_objects_are_closed_unless_they_are_combined_or_say_otherwise() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "integer"}}},
            "open": {"type": "object", "properties": {}, "additionalProperties": True},
            "either": {"properties": {"x": {}}, "anyOf": [{"properties": {"y": {}}}, {"required": ["z"]}]},
        },
        "$defs": {"D": {"properties": {"d": {"enum": [{"properties": {}}]}}}},
    }
    out = closed(schema)
    assert out["additionalProperties"] is False
    assert out["properties"]["a"]["additionalProperties"] is False
    assert out["properties"]["open"]["additionalProperties"] is True
    assert "additionalProperties" not in out["properties"]["either"]
    assert "additionalProperties" not in out["properties"]["either"]["anyOf"][0]
    assert out["$defs"]["D"]["additionalProperties"] is False
    assert out["$defs"]["D"]["properties"]["d"]["enum"] == [{"properties": {}}]  # values are not schemas
    assert closed({"allOf": [{"properties": {"a": {}}}, {"properties": {"b": {}}}]}) == {
        "allOf": [{"properties": {"a": {}}}, {"properties": {"b": {}}}]
    }
