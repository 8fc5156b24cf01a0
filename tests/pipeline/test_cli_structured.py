"""``--schema`` and ``--choices`` on the command line, run as a user runs it against a loopback server
that answers each prompt with itself (so the template writes the model's reply), with token logprobs
when asked (so ``--choices`` reads the first token of the reply the template wrote)."""

from __future__ import annotations

import json

import pytest
from pipeline_support import llmclient, read_results, write_jsonl

SCHEMA = {
    "type": "object",
    "properties": {"dish": {"type": "string"}, "late": {"type": "boolean"}},
    "required": ["dish", "late"],
}
TEMPLATE = '{"dish": "{{ dish }}", "late": {{ late }}}'


@pytest.fixture
def orders(parrot):
    server, project = parrot
    (project / "schema.json").write_text(json.dumps(SCHEMA))
    write_jsonl(
        project / "orders.jsonl",
        [{"id": 1, "dish": "soup", "late": "false"}, {"id": 2, "dish": "CHATTY pie", "late": "true"}],
    )
    return server, project


def test_run_with_a_schema_writes_parsed_fails_an_invalid_reply_and_retries_it(orders) -> None:
    server, project = orders
    command = (
        "run",
        "orders.jsonl",
        "-t",
        TEMPLATE,
        "-o",
        "out.jsonl",
        "--id-field",
        "id",
        "--schema",
        "schema.json",
    )
    first = llmclient(*command, cwd=project)
    assert first.returncode == 1, first.stderr
    assert "1 done, 1 failed" in first.stdout and "--retry-failed" in first.stderr
    ok, failed = sorted(read_results(project / "out.jsonl"), key=lambda line: line["row_id"])
    assert ok["parsed"] == {"dish": "soup", "late": False}
    assert failed["status"] == "error" and failed["text"] == 'Sure! {"dish": "CHATTY pie", "late": true}'
    assert failed["error"]["type"] == "StructuredOutputError" and failed["error"]["errors"]

    server.chatty = False
    retried = llmclient(*command, "--retry-failed", cwd=project)
    assert retried.returncode == 0, retried.stderr
    assert "1 done, 0 failed, 1 skipped" in retried.stdout
    last = read_results(project / "out.jsonl")[-1]
    assert (last["row_id"], last["parsed"]) == (2, {"dish": "CHATTY pie", "late": True})


def test_run_with_choices_scores_the_labels_and_writes_each_probability(parrot) -> None:
    _, project = parrot
    write_jsonl(project / "says.jsonl", [{"say": "yes"}, {"say": "no"}, {"say": "maybe"}])
    result = llmclient(
        "run", "says.jsonl", "-t", "{{ say }}", "-o", "out.jsonl", "--choices", "yes, no", cwd=project
    )
    assert result.returncode == 1 and "2 done, 1 failed" in result.stdout
    lines = {line["input"]["say"]: line for line in read_results(project / "out.jsonl")}
    assert (lines["yes"]["parsed"], lines["no"]["parsed"]) == ("yes", "no")
    assert lines["yes"]["scores"] == {"yes": 1.0, "no": 0.0} and lines["yes"]["exact"] is False
    # the model's first token begins neither label: no guess, the row fails saying why
    assert lines["maybe"]["error"]["type"] == "UnsupportedFeatureError"
    assert "found none of the candidates ['yes', 'no']" in lines["maybe"]["error"]["message"]


@pytest.mark.parametrize(
    ("files", "args", "message"),
    [
        ({}, ["--schema", "nope.json"], "cannot read the schema file 'nope.json'"),
        ({"bad.json": "{not json"}, ["--schema", "bad.json"], "the schema file 'bad.json' is not valid JSON"),
        (
            {"list.json": "[1]"},
            ["--schema", "list.json"],
            "holds a JSON list; it must be a JSON Schema object",
        ),
        (
            {"typo.json": '{"type": "objekt"}'},
            ["--schema", "typo.json"],
            "the schema file 'typo.json': response_format is not a valid JSON Schema at type",
        ),
        ({}, ["--choices", "a,,b"], "--choices takes comma-separated labels, none of them empty"),
        ({}, ["--choices", "a,a"], "Choice options must differ"),
        ({}, ["--choices", "a"], "score at least two candidates"),
        ({}, ["--choices", "a,b", "-p", 'response_format={"type": "json_object"}'], "are both given"),
        ({}, ["--choices", "a,b", "--schema", "schema.json"], "not allowed with argument"),
    ],
)
def test_a_bad_schema_or_choices_exits_2_with_the_reason(orders, files, args, message) -> None:
    _, project = orders
    for name, text in files.items():
        (project / name).write_text(text)
    result = llmclient("run", "orders.jsonl", "-t", "{{ dish }}", "-o", "out.jsonl", *args, cwd=project)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (project / "out.jsonl").exists()


def test_chat_with_a_schema_prints_the_parsed_json(orders) -> None:
    _, project = orders
    result = llmclient("chat", "--schema", "schema.json", '{"late":false,"dish":"soup"}', cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout == '{\n  "late": false,\n  "dish": "soup"\n}\n'  # one pretty JSON document
    chose = llmclient("chat", "--choices", "yes,no", cwd=project, stdin="no\n")
    assert chose.returncode == 0, chose.stderr
    assert json.loads(chose.stdout) == {"choice": "no", "scores": {"yes": 0.0, "no": 1.0}, "exact": False}


def test_chat_exits_1_when_the_reply_does_not_validate(orders) -> None:
    _, project = orders
    result = llmclient("chat", "--schema", "schema.json", '{"dish": "soup"}', cwd=project)
    assert result.returncode == 1 and result.stdout == ""
    assert "StructuredOutputError" in result.stderr and "'late' is a required property" in result.stderr


def test_render_accepts_a_schema_and_choices(orders) -> None:
    _, project = orders
    for args in (["--schema", "schema.json"], ["--choices", "yes,no"]):
        result = llmclient("render", *args, "Hi", cwd=project)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["messages"] == [{"role": "user", "content": "Hi"}]
        # choices are scored after the prompt as it is: no format is sent with it
        assert ("response_format" in json.loads(result.stdout)) == (args[0] == "--schema")
    missing = llmclient("render", "--schema", "nope.json", "Hi", cwd=project)
    assert missing.returncode == 2 and "cannot read the schema file 'nope.json'" in missing.stderr
