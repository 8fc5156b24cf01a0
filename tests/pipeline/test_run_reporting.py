"""What ``llmclient run`` tells the user: earlier failures on a rerun, template errors on some rows,
dry runs, the first error on screen, retry advice only where a retry helps, the input checked
before any model, and ``llmclient results``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
from pipeline_support import llmclient, write_jsonl, write_project

from llmclient import pipeline
from llmclient.errors import InvalidRequestError
from llmclient.pipeline import TemplateError
from llmclient.testing.server import LoopbackServer, OpenAIHandler, Reply, Request, error_reply

STARS = [
    {"id": 0, "name": "a", "stars": 2},
    {"id": 1, "name": "b", "stars": "5"},
    {"id": 2, "name": "c", "stars": 4},
]
"""Rows whose ``stars`` is a number, except row 1's: text, as every CSV field is."""
RATED = "{% if stars < 3 %}Low: {% endif %}{{ name }}"


class FlakyServer:
    """Answers ``echo: <prompt>``, except a 503 for prompts containing ``BUSY`` while ``busy`` is set."""

    def __init__(self) -> None:
        self.busy = True
        self._ok = OpenAIHandler(text=lambda body: "echo: " + body["messages"][-1]["content"])

    def __call__(self, request: Request) -> Reply:
        if self.busy and "BUSY" in request.json()["messages"][-1]["content"]:
            return error_reply(503, "overloaded, try later")
        return self._ok(request)


@pytest.fixture
def flaky(tmp_path: Path) -> tuple[FlakyServer, Path]:
    handler = FlakyServer()
    with LoopbackServer(handler) as server:
        yield handler, write_project(tmp_path, server.base_url)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return llmclient("run", *args, "-o", "out.jsonl", cwd=cwd)


def test_a_rerun_reports_the_rows_it_skips_because_they_failed_earlier(
    flaky: tuple[FlakyServer, Path],
) -> None:
    server, project = flaky
    write_jsonl(project / "rows.jsonl", [{"dish": f"dish {i}"} for i in range(5)] + [{"dish": "BUSY"}])
    first = run("rows.jsonl", "-t", "{{ dish }}", cwd=project)
    assert first.returncode == 1
    server.busy = False
    rerun = run("rows.jsonl", "-t", "{{ dish }}", cwd=project)
    assert rerun.returncode == 1  # a failed row remains
    assert "6 skipped (1 of them failed earlier)" in rerun.stdout
    assert "6 skipped, of which 1 failed earlier: rerun with --retry-failed" in rerun.stderr
    retried = run("rows.jsonl", "-t", "{{ dish }}", "--retry-failed", cwd=project)
    assert retried.returncode == 0, retried.stderr
    assert "1 done, 0 failed, 5 skipped of 6 rows" in retried.stdout
    assert "failed earlier" not in retried.stdout + retried.stderr


def test_a_retryable_failure_suggests_retry_failed_and_shows_the_first_error(
    flaky: tuple[FlakyServer, Path],
) -> None:
    _, project = flaky
    write_jsonl(project / "rows.jsonl", [{"dish": "fine"}, {"dish": "BUSY"}])
    result = run("rows.jsonl", "-t", "{{ dish }}", cwd=project)
    assert result.returncode == 1
    assert "first error: row 1: BackendUnavailableError:" in result.stderr
    assert "overloaded, try later" in result.stderr
    assert "rerun with --retry-failed" in result.stderr


def test_a_template_failing_on_some_rows_fails_those_rows_naming_row_and_expression(
    project: Path,
) -> None:
    write_jsonl(project / "stars.jsonl", STARS)
    result = run("stars.jsonl", "-t", RATED, "--id-field", "id", cwd=project)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "2 done, 1 failed" in result.stdout
    assert "first error: row 1: TemplateError:" in result.stderr
    assert "at template line 1 ({% if stars < 3 %}" in result.stderr
    assert "fields read from CSV are text" in result.stderr
    assert "--retry-failed" not in result.stderr  # the same row fails the same way: change the template
    lines = [json.loads(line) for line in (project / "out.jsonl").read_text().splitlines()]
    failed = [line for line in lines if line["status"] == "error"]
    assert [line["row_id"] for line in failed] == [1]
    assert failed[0]["error"]["type"] == "TemplateError"


def test_a_csv_template_error_names_the_expression_and_the_fix() -> None:
    template = pipeline.PromptTemplate("Review: {{ name }}\n{% if stars < 3 %}Be kind.{% endif %}")
    with pytest.raises(TemplateError) as info:
        template.render({"name": "a", "stars": "2"})
    message = str(info.value)
    assert "at template line 2 ({% if stars < 3 %}Be kind.{% endif %})" in message
    assert "'<' not supported between instances of 'str' and 'int'" in message
    assert "{% if stars|int < 3 %}" in message


def test_the_dry_run_renders_every_row_shows_the_first_prompt_and_exits_2_on_a_failing_row(
    project: Path, echo: tuple[object, LoopbackServer]
) -> None:
    _, server = echo
    write_jsonl(project / "stars.jsonl", STARS)
    result = run("stars.jsonl", "-t", RATED, "--system", "Be brief.", "--dry-run", cwd=project)
    assert result.returncode == 2
    assert "first prompt, row 0:\n[system] Be brief.\n[user] Low: a" in result.stdout
    assert "dry run: 3 rows rendered, 1 failed to render" in result.stdout
    assert "1 of 3 rows fail to render; the first: row 1: TemplateError:" in result.stderr
    assert "out.jsonl" not in result.stdout + result.stderr  # it wrote no file: it points at none
    assert not (project / "out.jsonl").exists()
    assert server.requests == []


def test_a_clean_dry_run_exits_0_and_shows_the_first_prompt(project: Path) -> None:
    result = run("rows.jsonl", "-t", "Analyse {{ dish }}", "--dry-run", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "first prompt, row 0:\n[user] Analyse dish 0" in result.stdout
    assert "out.jsonl" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jsonl", "", "no rows in empty.jsonl"),
        ("blank.jsonl", "\n\n", "no rows in blank.jsonl"),
        ("header.csv", "name,stars\n", "no rows in header.csv"),
        ("bad.jsonl", "{not json\n", "bad.jsonl:1 is not valid JSON"),
        ("rows.txt", "a\n", "unknown extension '.txt'"),
        ("missing.jsonl", None, "input file 'missing.jsonl' does not exist"),
    ],
)
def test_the_input_is_checked_before_any_backend_is_built(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    if content is not None:
        (tmp_path / name).write_text(content)
    # a backend that cannot be built (its key is missing): the input's problem is what is reported
    result = llmclient("run", name, "-t", "x", "-o", "out.jsonl", "-b", "openai:gpt-4o-mini", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "API key" not in result.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_a_failing_run_raises_without_a_no_running_event_loop_prefix(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError) as info:
        pipeline.run(
            {"type": "openai", "model": "m", "api_key": "k"},
            tmp_path / "none.jsonl",
            template="x",
            output=tmp_path / "o.jsonl",
        )
    shown = "".join(traceback.format_exception(info.value))
    assert "does not exist" in shown
    assert "no running event loop" not in shown
    assert "During handling of the above exception" not in shown


def test_results_prints_one_readable_record_per_row_in_input_order(project: Path) -> None:
    write_jsonl(project / "stars.jsonl", STARS)
    assert run("stars.jsonl", "-t", RATED, "--id-field", "id", cwd=project).returncode == 1
    lines = (project / "out.jsonl").read_text().splitlines()
    (project / "out.jsonl").write_text("\n".join(reversed(lines)) + "\n")  # finished in another order
    result = llmclient("results", "out.jsonl", cwd=project)
    assert result.returncode == 0, result.stderr
    heads = [line for line in result.stdout.splitlines() if line.startswith("row ")]
    assert [h.split(":")[0] for h in heads] == ["row 0", "row 1", "row 2"]
    assert "row 1: error" in result.stdout and "  error: TemplateError:" in result.stdout
    assert "  reply: echo: Low: a" in result.stdout
    as_json = llmclient("results", "out.jsonl", "--json", cwd=project)
    assert [json.loads(line)["row_id"] for line in as_json.stdout.splitlines()] == [0, 1, 2]


def test_results_of_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = llmclient("results", "nope.jsonl", cwd=tmp_path)
    assert result.returncode == 2
    assert "results file 'nope.jsonl' does not exist" in result.stderr


def test_render_of_a_remote_backend_needs_no_key(tmp_path: Path) -> None:
    env_key = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "llmclient", "render", "-b", "openai:gpt-4o-mini", "hello"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env_key,
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["model"] == "gpt-4o-mini" and body["messages"] == [{"role": "user", "content": "hello"}]


def test_render_still_reports_a_bad_setting_that_is_not_the_key(tmp_path: Path) -> None:
    (tmp_path / "llmclient.toml").write_text('[backends.r]\ntype = "openai"\nmodel = "m"\ntimeout = -1\n')
    result = llmclient("render", "hello", cwd=tmp_path)
    assert result.returncode == 2
    assert "timeout" in result.stderr


def test_ctrl_c_in_chat_says_interrupted_without_the_run_advice(tmp_path: Path) -> None:
    handler = OpenAIHandler(text="late", latency=30)
    with LoopbackServer(handler) as server:
        write_project(tmp_path, server.base_url)
        process = subprocess.Popen(
            [sys.executable, "-m", "llmclient", "chat", "--no-stream", "hello"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not server.requests:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "llmclient: interrupted" in err
    assert "rerun" not in err and "rows" not in err


def test_the_summary_counts_earlier_failures_and_what_a_retry_may_fix(
    backend: object, tmp_path: Path
) -> None:
    rows = [{"id": 0, "dish": "ok"}, {"id": 1, "dish": "FAIL"}, {"id": 2, "name": "no dish"}]
    options = {"template": "{{ dish }}", "output": tmp_path / "out.jsonl", "id_field": "id"}
    first = pipeline.run(backend, rows, **options)
    assert (first.done, first.failed, first.retry_may_fix) == (1, 2, 0)  # a 400 and a template error
    assert first.first_error is not None and first.first_error.startswith(("row 1: ", "row 2: "))
    again = pipeline.run(backend, rows, **options)
    assert (again.skipped, again.failed_earlier, again.failed) == (3, 2, 0)
    assert "3 skipped (2 of them failed earlier)" in str(again)
