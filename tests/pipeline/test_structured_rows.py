"""Structured output in the batch runner: ``parsed`` on each ok line, invalid replies as failed rows
that keep their text, retried with ``retry_failed``, and the format as part of each row's key.

The backend is a real :class:`~llmclient.testing.FunctionBackend` answering each prompt with itself,
so the template writes the reply and every row's fate is known in advance.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from typing import Literal

import pytest
from pipeline_support import read_results
from pydantic import BaseModel

from llmclient import JSON, Choice, pipeline
from llmclient.errors import InvalidRequestError
from llmclient.pipeline import RunOptions
from llmclient.structured import OutputFormat, output_format
from llmclient.testing import FunctionBackend
from llmclient.types import ChatResponse, GenerationParams, Message, Usage

ORDER_TEMPLATE = '{"dish": "{{ dish }}", "late": {{ late }}}'
ORDER_SCHEMA = {
    "type": "object",
    "properties": {"dish": {"type": "string"}, "late": {"type": "boolean"}},
    "required": ["dish", "late"],
}
ROWS = [{"id": 1, "dish": "soup", "late": "false"}, {"id": 2, "dish": "pie", "late": "true"}]


class Order(BaseModel):
    dish: str
    sentiment: Literal["positive", "negative"]
    ordered: datetime.date


def parrot(messages: list[Message], params: GenerationParams) -> str:
    """The reply is the prompt: the template decides what the model 'said'."""
    return messages[-1].text


def test_each_ok_line_has_the_parsed_value_of_a_schema(tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    with FunctionBackend(parrot) as backend:
        summary = pipeline.run(
            backend, ROWS, template=ORDER_TEMPLATE, output=out, id_field="id", response_format=ORDER_SCHEMA
        )
    assert (summary.done, summary.failed) == (2, 0)
    lines = sorted(read_results(out), key=lambda line: line["row_id"])
    assert [line["parsed"] for line in lines] == [
        {"dish": "soup", "late": False},
        {"dish": "pie", "late": True},
    ]
    assert lines[0]["text"] == '{"dish": "soup", "late": false}'


def test_a_pydantic_model_is_sent_as_itself_and_written_as_json(tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    template = '{"dish": "{{ dish }}", "sentiment": "positive", "ordered": "2026-03-0{{ id }}"}'
    with FunctionBackend(parrot) as backend:
        summary = pipeline.run(backend, ROWS, template=template, output=out, response_format=Order)
        sent = [request.params.response_format for request in backend.requests]
    assert summary.done == 2
    assert all(isinstance(fmt, OutputFormat) and fmt.model is Order for fmt in sent)  # itself, not a copy
    parsed = sorted((line["parsed"] for line in read_results(out)), key=lambda p: p["ordered"])
    assert parsed[0] == {"dish": "soup", "sentiment": "positive", "ordered": "2026-03-01"}


def test_a_choice_format_parses_each_reply_to_the_string(tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    rows = [{"say": "yes"}, {"say": " no \n"}, {"say": '{"value": "yes"}'}]
    with FunctionBackend(parrot) as backend:
        summary = pipeline.run(
            backend, rows, template="{{ say }}", output=out, response_format=Choice(["yes", "no"])
        )
        assert backend.requests[0].params.response_format == output_format(Choice(["yes", "no"]))
    assert summary.done == 3
    assert sorted(line["parsed"] for line in read_results(out)) == ["no", "yes", "yes"]


def likes(messages: list[Message], candidates: tuple[str, ...]) -> list[float]:
    """A scorer that finds the label the prompt names likely (log 0.8), the others not (log 0.1)."""
    return [math.log(0.8 if label in messages[-1].text else 0.1) for label in candidates]


def test_choices_scores_the_labels_and_writes_the_chosen_one_with_every_probability(tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    rows = [{"id": 1, "review": "I love it: good"}, {"id": 2, "review": "bad, sadly"}]
    with FunctionBackend(parrot, scorer=likes) as backend:
        summary = pipeline.run(
            backend, rows, template="{{ review }}", output=out, id_field="id", choices=["good", "bad", "meh"]
        )
        assert backend.requests == []  # nothing generated
        assert [texts for _, texts, _ in backend.scored] == [("good", "bad", "meh")] * 2
        again = pipeline.run(
            backend, rows, template="{{ review }}", output=out, id_field="id", choices=["good", "bad", "meh"]
        )
        other = pipeline.run(
            backend, rows, template="{{ review }}", output=out, id_field="id", choices=["good", "bad"]
        )
    assert (summary.done, summary.failed, again.skipped, other.done) == (2, 0, 2, 2)
    first, second = sorted(read_results(out)[:2], key=lambda line: line["row_id"])
    assert (first["status"], first["parsed"], first["text"], first["exact"]) == ("ok", "good", "good", True)
    assert first["scores"] == pytest.approx({"good": 0.8, "bad": 0.1, "meh": 0.1})
    assert second["parsed"] == "bad" and sum(second["scores"].values()) == pytest.approx(1.0)
    assert first["latency"] is not None and first["error"] is None


def test_a_backend_that_cannot_score_fails_each_choices_row_saying_why(tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    with FunctionBackend(parrot) as backend:  # no scorer: it cannot score
        summary = pipeline.run(backend, ROWS, template="{{ dish }}", output=out, choices=["soup", "pie"])
    assert (summary.done, summary.failed) == (0, 2)
    line = read_results(out)[0]
    assert line["status"] == "error" and line["error"]["type"] == "UnsupportedFeatureError"
    assert "cannot score candidates" in line["error"]["message"]
    assert "response_format=Choice" in line["error"]["message"]  # the fix
    assert (line["scores"], line["exact"]) == (None, None)


def test_a_reply_that_does_not_validate_is_a_failed_row_with_its_text_then_retried(tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    chatty = True

    def model(messages: list[Message], params: GenerationParams) -> str:
        text = messages[-1].text
        return "Sure! " + text if chatty and "pie" in text else text

    run = dict(template=ORDER_TEMPLATE, output=out, id_field="id", response_format=ORDER_SCHEMA)
    with FunctionBackend(model) as backend:
        first = pipeline.run(backend, ROWS, **run)
        assert (first.done, first.failed) == (1, 1)
        (failed,) = [line for line in read_results(out) if line["status"] == "error"]
        assert failed["row_id"] == 2 and failed["parsed"] is None
        assert failed["text"] == 'Sure! {"dish": "pie", "late": true}'  # paid for, kept
        assert failed["finish_reason"] == "stop"
        assert failed["error"]["type"] == "StructuredOutputError"
        assert "not JSON for schema 'output'" in failed["error"]["message"]
        assert failed["error"]["errors"] and "invalid JSON" in failed["error"]["errors"][0]

        again = pipeline.run(backend, ROWS, **run)
        assert (again.done, again.skipped, len(backend.requests)) == (0, 2, 2)

        chatty = False
        retried = pipeline.run(backend, ROWS, **run, retry_failed=True)
    assert (retried.done, retried.skipped) == (1, 1)
    last = read_results(out)[-1]
    assert (last["row_id"], last["status"], last["parsed"]) == (2, "ok", {"dish": "pie", "late": True})


def test_a_reply_cut_by_max_new_tokens_says_so_in_its_line(tmp_path) -> None:
    out = tmp_path / "out.jsonl"

    def cut(messages: list[Message], params: GenerationParams) -> ChatResponse:
        return ChatResponse(text='{"dish": "so', finish_reason="length")

    with FunctionBackend(cut) as backend:
        summary = pipeline.run(backend, ROWS[:1], template="{{ dish }}", output=out, response_format=JSON)
    assert summary.failed == 1
    (line,) = read_results(out)
    assert (line["text"], line["finish_reason"]) == ('{"dish": "so', "length")
    assert "raise max_new_tokens" in line["error"]["message"]


def test_a_changed_format_is_new_work_the_same_one_is_done(tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    wider = {**ORDER_SCHEMA, "properties": {**ORDER_SCHEMA["properties"], "note": {"type": "string"}}}
    with FunctionBackend(parrot) as backend:

        def run(**given: object) -> tuple[int, int]:
            summary = pipeline.run(backend, ROWS, template=ORDER_TEMPLATE, output=out, id_field="id", **given)
            return summary.done, summary.skipped

        assert run(response_format=ORDER_SCHEMA) == (2, 0)
        assert run(response_format=dict(ORDER_SCHEMA)) == (0, 2)  # an equal schema is the same work
        assert run(params={"response_format": ORDER_SCHEMA}) == (0, 2)  # however it was given
        assert run(response_format=wider) == (2, 0)
        assert run() == (2, 0)  # no format at all is other work too
    without = [line for line in read_results(out) if line["input"]["id"] == 1][-1]
    assert without["parsed"] is None and without["status"] == "ok"


def test_the_format_is_checked_before_the_backend_is_loaded(tmp_path) -> None:
    spec = {"type": "no-such-type", "model": "m"}  # loading it would be a ConfigError
    out = tmp_path / "o.jsonl"
    with pytest.raises(InvalidRequestError, match="response_format must be a pydantic model class"):
        pipeline.run(spec, ROWS, template="{{ dish }}", output=out, response_format=42)
    with pytest.raises(InvalidRequestError, match="not a valid JSON Schema at properties"):
        pipeline.run(spec, ROWS, template="{{ dish }}", output=out, response_format={"properties": 3})
    assert not out.exists()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"choices": "yes"}, "Choice takes a list of non-empty strings"),
        ({"choices": []}, "Choice takes a list of non-empty strings"),
        ({"choices": ["a", "a"]}, "Choice options must differ"),
        ({"choices": ["a", "b"], "response_format": JSON}, "response_format and choices are both given"),
        ({"choices": ["a"]}, "at least two labels"),
        ({"response_format": JSON, "params": {"response_format": JSON}}, "both given"),
    ],
)
def test_bad_formats_are_refused_when_the_options_are_built(given, message) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        RunOptions(**{"template": "{{ a }}", "output": "o.jsonl", **given})


def test_options_hold_the_checked_format_and_survive_replace() -> None:
    options = RunOptions(template="{{ a }}", output="o.jsonl", choices=["yes", "no"], params={"seed": 1})
    assert options.choices == ("yes", "no") and options.response_format is None
    assert options.generation.response_format is None  # choices score: nothing is generated
    assert options.call_options == {"seed": 1}
    constrained = RunOptions(template="{{ a }}", output="o.jsonl", response_format=Choice(["yes", "no"]))
    assert constrained.generation.response_format == OutputFormat("choice", choices=("yes", "no"))
    again = dataclasses.replace(options, concurrency=2)
    assert again.generation == options.generation
    schema = RunOptions(template="{{ a }}", output="o.jsonl", response_format=ORDER_SCHEMA)
    assert isinstance(schema.response_format, OutputFormat)
    assert dataclasses.replace(schema, limit=1).generation == schema.generation


def test_a_failed_structured_row_keeps_what_its_reply_cost(tmp_path) -> None:
    out = tmp_path / "out.jsonl"

    def chatty(messages: list[Message], params: GenerationParams) -> ChatResponse:
        return ChatResponse(text="Sure, here it is", finish_reason="stop", usage=Usage(11, 4))

    with FunctionBackend(chatty) as backend:
        summary = pipeline.run(backend, ROWS[:1], template=ORDER_TEMPLATE, output=out, response_format=JSON)
    assert summary.failed == 1
    (line,) = read_results(out)
    assert line["usage"] == {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
    assert line["latency"] is not None and line["text"] == "Sure, here it is"
