"""The run's options: one frozen object, checked when built, the same whether from code or the command."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import textwrap

import pytest
from pipeline_support import read_results

from llmclient import pipeline
from llmclient.errors import InvalidRequestError
from llmclient.pipeline import RunOptions
from llmclient.types import GenerationParams


def test_arun_takes_exactly_the_options_with_the_same_defaults() -> None:
    keywords = {
        name: p.default
        for name, p in inspect.signature(pipeline.arun).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    fields = {
        f.name: f.default if f.default is not dataclasses.MISSING else inspect.Parameter.empty
        for f in dataclasses.fields(RunOptions)
    }
    assert keywords.keys() == fields.keys()
    assert {**keywords, "params": {}} == {**fields, "params": {}}  # None and {} both mean no parameters


def test_every_option_has_a_docstring() -> None:
    body = ast.parse(textwrap.dedent(inspect.getsource(RunOptions))).body[0].body  # type: ignore[attr-defined]
    documented = {
        node.target.id
        for node, after in itertools.pairwise(body)
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and isinstance(after, ast.Expr)
        and isinstance(after.value, ast.Constant)
        and isinstance(after.value.value, str)
    }
    assert documented == {f.name for f in dataclasses.fields(RunOptions)}


def test_options_are_frozen_and_copy_what_they_are_given() -> None:
    few_shot = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    params = {"temperature": 0}
    keep = ["a"]
    options = RunOptions(
        template="{{ a }}", output="o.jsonl", few_shot=few_shot, params=params, keep_fields=keep
    )
    few_shot.clear()
    params["temperature"] = 1
    keep.append("b")
    assert len(options.few_shot) == 2 and options.keep_fields == ("a",)
    assert options.generation == GenerationParams(temperature=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.concurrency = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        options.params["temperature"] = 2  # type: ignore[index]


@pytest.mark.parametrize(
    ("given", "error", "message"),
    [
        ({"concurrency": 0}, InvalidRequestError, "concurrency must be >= 1, got 0"),
        ({"template": "{{ a "}, pipeline.TemplateError, "syntax error on line 1"),
        ({"params": {"max_length": 5}}, InvalidRequestError, "use max_new_tokens"),
        ({"params": {"temperature": -1}}, InvalidRequestError, "temperature must be >= 0"),
        ({"few_shot": [{"role": "robot", "content": "x"}]}, InvalidRequestError, "role"),
    ],
)
def test_bad_options_are_refused_when_built(given, error, message) -> None:
    with pytest.raises(error, match=message):
        RunOptions(**{"template": "{{ a }}", "output": "o.jsonl", **given})


def test_run_checks_its_options_before_loading_the_backend(tmp_path) -> None:
    spec = {"type": "no-such-type", "model": "m"}  # loading it would be a ConfigError
    with pytest.raises(InvalidRequestError, match="concurrency must be >= 1"):
        pipeline.run(spec, [{"a": 1}], template="{{ a }}", output=tmp_path / "o.jsonl", concurrency=0)
    assert not (tmp_path / "o.jsonl").exists()


def test_run_with_built_options_is_the_same_run(backend, tmp_path) -> None:
    rows = [{"id": i, "a": f"row {i}"} for i in range(4)]
    options = RunOptions(
        template="{{ a }}", output=tmp_path / "o.jsonl", id_field="id", keep_fields=["id"], params={"seed": 1}
    )
    first = pipeline.run_with(backend, rows, options)
    again = pipeline.run(
        backend,
        rows,
        template="{{ a }}",
        output=tmp_path / "o.jsonl",
        id_field="id",
        keep_fields=["id"],
        params={"seed": 1},
    )
    assert (first.done, again.done, again.skipped) == (4, 0, 4)
    lines = sorted(read_results(tmp_path / "o.jsonl"), key=lambda r: r["row_id"])
    assert [r["input"] for r in lines] == [{"id": i} for i in range(4)]
