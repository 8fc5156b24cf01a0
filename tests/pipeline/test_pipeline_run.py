"""The batch runner over real HTTP: outputs, templates, resume, retries, concurrency and limits."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections import Counter
from pathlib import Path

import pytest
from pipeline_support import read_results, write_jsonl

from llmclient import pipeline
from llmclient.backends.openai import OpenAICompatibleBackend
from llmclient.errors import InvalidRequestError
from llmclient.pipeline.progress import Progress, RunSummary
from llmclient.testing.server import LoopbackServer, OpenAIHandler

ORDERS = [{"id": f"o{i}", "foods": f"dish {i}", "comment": f"comment {i}"} for i in range(12)]


def test_every_row_gets_one_result_line_with_reply_usage_and_input(backend, tmp_path) -> None:
    source = write_jsonl(tmp_path / "orders.jsonl", ORDERS)
    out = tmp_path / "out.jsonl"
    summary = pipeline.run(
        backend,
        source,
        template="Analyse {{ foods }}: {{ comment }}",
        output=out,
        params={"max_new_tokens": 20, "temperature": 0},
        id_field="id",
    )
    lines = read_results(out)
    assert (summary.total, summary.done, summary.failed, summary.skipped) == (12, 12, 0, 0)
    assert sorted(line["row_id"] for line in lines) == sorted(r["id"] for r in ORDERS)
    first = next(line for line in lines if line["row_id"] == "o3")
    assert first["status"] == "ok" and first["text"] == "echo: Analyse dish 3: comment 3"
    assert first["finish_reason"] == "stop"
    assert (
        first["usage"]["total_tokens"]
        == first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    )
    assert first["input"] == ORDERS[3]
    assert first["backend"] == "openai-compatible" and first["model"] == "test-model"
    assert first["latency"] > 0 and first["error"] is None
    assert summary.prompt_tokens == 12 * 5
    assert summary.percentile(0.5) is not None


def test_csv_and_python_rows_work_like_jsonl(backend, tmp_path) -> None:
    csv_path = tmp_path / "orders.csv"
    csv_path.write_text("foods,comment\npizza,great\nsoup,cold\n")
    pipeline.run(backend, csv_path, template="{{ foods }}/{{ comment }}", output=tmp_path / "a.jsonl")
    pipeline.run(
        backend,
        [{"foods": "pizza", "comment": "great"}],
        template="{{ foods }}/{{ comment }}",
        output=tmp_path / "b.jsonl",
    )
    assert [r["text"] for r in read_results(tmp_path / "a.jsonl")] == ["echo: pizza/great", "echo: soup/cold"]
    assert [r["text"] for r in read_results(tmp_path / "b.jsonl")] == ["echo: pizza/great"]


def test_system_prompt_and_few_shot_turns_are_sent(echo, backend, tmp_path) -> None:
    _, server = echo
    few_shot = [{"role": "user", "content": "Analyse: tea"}, {"role": "assistant", "content": "a drink"}]
    pipeline.run(
        backend,
        [{"foods": "cake"}],
        template="Analyse: {{ foods }}",
        system="You are a {{ 'chef' }}.",
        few_shot=few_shot,
        output=tmp_path / "out.jsonl",
    )
    sent = server.requests[-1].json()["messages"]
    assert sent == [
        {"role": "system", "content": "You are a chef."},
        *few_shot,
        {"role": "user", "content": "Analyse: cake"},
    ]


def test_a_missing_field_fails_only_that_row_and_names_the_field(backend, tmp_path) -> None:
    rows = [{"foods": "a", "comment": "x"}, {"foods": "b"}, {"foods": "c", "comment": "z"}]
    out = tmp_path / "out.jsonl"
    summary = pipeline.run(backend, rows, template="{{ foods }} {{ comment }}", output=out)
    assert (summary.done, summary.failed) == (2, 1)
    failed = [r for r in read_results(out) if r["status"] == "error"]
    assert len(failed) == 1 and failed[0]["input"] == {"foods": "b"}
    assert "'comment' is undefined" in failed[0]["error"]["message"]
    assert failed[0]["error"]["type"] == "TemplateError"


def test_a_row_without_the_id_field_fails_with_its_own_error_naming_field_row_and_fix(
    backend, tmp_path
) -> None:
    rows = [{"id": "a", "foods": "x"}, {"foods": "y"}, {"id": "c", "foods": "z"}]
    out = tmp_path / "out.jsonl"
    summary = pipeline.run(backend, rows, template="{{ foods }}", output=out, id_field="id")
    assert (summary.done, summary.failed) == (2, 1)
    failed = next(r for r in read_results(out) if r["status"] == "error")
    assert failed["row_id"] == 1 and failed["input"] == {"foods": "y"}
    assert failed["error"]["type"] == "MissingIdFieldError"
    message = failed["error"]["message"]
    assert "row 1 has no id field 'id' (row fields: foods)" in message
    assert "--id-field" in message and "id_field=" in message
    assert issubclass(pipeline.MissingIdFieldError, InvalidRequestError)
    assert not issubclass(pipeline.MissingIdFieldError, pipeline.TemplateError)


def test_template_syntax_errors_are_reported_before_any_row(backend, tmp_path) -> None:
    with pytest.raises(pipeline.TemplateError, match="syntax error on line 1"):
        pipeline.run(backend, ORDERS, template="{{ foods ", output=tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_rerun_skips_finished_rows(echo, backend, tmp_path) -> None:
    _, server = echo
    out = tmp_path / "out.jsonl"
    first = pipeline.run(backend, ORDERS, template="{{ foods }}", output=out, id_field="id", limit=5)
    sent = len(server.requests)
    second = pipeline.run(backend, ORDERS, template="{{ foods }}", output=out, id_field="id")
    assert (first.done, second.done, second.skipped) == (5, 7, 5)
    assert len(server.requests) - sent == 7
    assert Counter(r["row_id"] for r in read_results(out)) == Counter(r["id"] for r in ORDERS)


def test_a_changed_template_or_parameter_is_not_mistaken_for_done(backend, tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    pipeline.run(backend, ORDERS[:3], template="{{ foods }}", output=out)
    assert pipeline.run(backend, ORDERS[:3], template="{{ foods }}", output=out).skipped == 3
    assert pipeline.run(backend, ORDERS[:3], template="Now: {{ foods }}", output=out).done == 3
    assert (
        pipeline.run(
            backend, ORDERS[:3], template="{{ foods }}", output=out, params={"temperature": 0.5}
        ).done
        == 3
    )


def test_failed_rows_are_kept_until_retried_on_request(echo, backend, tmp_path) -> None:
    handler, _ = echo
    rows = [{"text": "fine"}, {"text": "FAIL me"}, {"text": "also fine"}]
    out = tmp_path / "out.jsonl"
    first = pipeline.run(backend, rows, template="{{ text }}", output=out)
    assert (first.done, first.failed) == (2, 1)
    error = next(r for r in read_results(out) if r["status"] == "error")["error"]
    assert error["type"] == "InvalidRequestError" and error["status_code"] == 400
    handler.failing = False
    again = pipeline.run(backend, rows, template="{{ text }}", output=out)
    assert (again.done, again.skipped) == (0, 3)
    retried = pipeline.run(backend, rows, template="{{ text }}", output=out, retry_failed=True)
    assert (retried.done, retried.skipped) == (1, 2)
    ok = Counter(r["input"]["text"] for r in read_results(out) if r["status"] == "ok")
    assert ok == {"fine": 1, "FAIL me": 1, "also fine": 1}


def test_a_partial_last_line_from_a_killed_run_is_cut_off(backend, tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    pipeline.run(backend, ORDERS[:4], template="{{ foods }}", output=out, id_field="id")
    with out.open("a") as handle:
        handle.write('{"row_id": "o4", "key": "abc", "sta')
    summary = pipeline.run(backend, ORDERS[:6], template="{{ foods }}", output=out, id_field="id")
    assert (summary.done, summary.skipped) == (2, 4)
    lines = read_results(out)  # every line parses
    assert sorted(r["row_id"] for r in lines) == [f"o{i}" for i in range(6)]


def test_a_results_file_of_something_else_is_refused(backend, tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"unrelated": true}\n')
    with pytest.raises(InvalidRequestError, match=r"out\.jsonl:1 is not a llmclient result line"):
        pipeline.run(backend, ORDERS, template="{{ foods }}", output=out)


def test_concurrency_bounds_requests_in_flight(tmp_path) -> None:
    state = {"now": 0, "peak": 0}
    ok = OpenAIHandler(text="ok")

    async def handler(request):
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.02)
        state["now"] -= 1
        return ok(request)

    with (
        LoopbackServer(handler) as server,
        OpenAICompatibleBackend(model="m", base_url=server.base_url) as backend,
    ):
        summary = pipeline.run(
            backend,
            [{"n": i} for i in range(30)],
            template="{{ n }}",
            output=tmp_path / "out.jsonl",
            concurrency=4,
        )
    assert summary.done == 30
    assert state["peak"] == 4


def test_requests_per_minute_spaces_the_requests(backend, tmp_path) -> None:
    started = time.perf_counter()
    pipeline.run(
        backend,
        [{"n": i} for i in range(5)],
        template="{{ n }}",
        output=tmp_path / "out.jsonl",
        requests_per_minute=600,
    )
    assert time.perf_counter() - started >= 0.4


def test_dry_run_calls_no_model_and_writes_nothing(echo, backend, tmp_path) -> None:
    _, server = echo
    rows = [*ORDERS[:3], {"id": "x"}]
    summary = pipeline.run(
        backend, rows, template="{{ foods }}", output=tmp_path / "out.jsonl", dry_run=True, id_field="id"
    )
    assert server.requests == []
    assert not (tmp_path / "out.jsonl").exists()
    assert (summary.total, summary.failed, summary.dry_run) == (4, 1, True)
    assert "dry run: 4 rows rendered" in str(summary)


def test_identical_rows_are_answered_once(echo, backend, tmp_path) -> None:
    _, server = echo
    summary = pipeline.run(
        backend, [{"a": 1}, {"a": 1}, {"a": 2}], template="{{ a }}", output=tmp_path / "o.jsonl"
    )
    assert (summary.done, summary.duplicates) == (2, 1)
    assert len(server.requests) == 2


def test_run_inside_an_event_loop_points_to_arun(backend, tmp_path) -> None:
    async def inside() -> None:
        pipeline.run(backend, ORDERS, template="{{ foods }}", output=tmp_path / "out.jsonl")

    with pytest.raises(InvalidRequestError, match=r"await pipeline\.arun"):
        asyncio.run(inside())


def test_arun_works_from_async_code(backend, tmp_path) -> None:
    summary = asyncio.run(
        pipeline.arun(backend, ORDERS[:3], template="{{ foods }}", output=tmp_path / "o.jsonl")
    )
    assert summary.done == 3


def test_a_backend_spec_is_loaded_and_closed(echo, tmp_path) -> None:
    _, server = echo
    spec = {"type": "openai-compatible", "model": "m", "base_url": server.base_url}
    summary = pipeline.run(spec, ORDERS[:2], template="{{ foods }}", output=tmp_path / "o.jsonl")
    assert summary.done == 2


def test_progress_line_shows_rows_rate_tokens_and_errors() -> None:
    summary = RunSummary(output=Path("o.jsonl"), done=3, failed=1, prompt_tokens=40)
    stream = io.StringIO()
    bar = Progress(summary, stream=stream, enabled=True)
    bar.expected = 10
    bar.update(force=True)
    bar.close()
    text = stream.getvalue()
    assert (
        "4/10 rows" in text and "rows/s" in text and "tok/s" in text and "ETA" in text and "errors 1" in text
    )


def test_progress_is_quiet_when_not_a_terminal() -> None:
    stream = io.StringIO()
    bar = Progress(RunSummary(output=Path("o.jsonl")), stream=stream)
    bar.update(force=True)
    bar.close()
    assert stream.getvalue() == ""


def test_summary_reads_like_a_report(backend, tmp_path) -> None:
    summary = pipeline.run(backend, ORDERS[:4], template="{{ foods }}", output=tmp_path / "o.jsonl")
    text = str(summary)
    assert text.startswith("4 done, 0 failed, 0 skipped of 4 rows")
    assert "tokens in 20" in text and "latency p50" in text and "o.jsonl" in text


def test_results_lines_are_valid_json_even_with_unicode(backend, tmp_path) -> None:
    out = tmp_path / "o.jsonl"
    pipeline.run(backend, [{"t": "crème brûlée ✓\nline two"}], template="{{ t }}", output=out)
    assert json.loads(out.read_text())["text"] == "echo: crème brûlée ✓\nline two"


def test_parquet_rows_are_read_in_batches(backend, tmp_path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    path = tmp_path / "orders.parquet"
    pq.write_table(pa.Table.from_pylist([{"foods": f"dish {i}", "n": i} for i in range(5)]), path)
    out = tmp_path / "out.jsonl"
    summary = pipeline.run(backend, path, template="{{ foods }} #{{ n }}", output=out)
    assert summary.done == 5
    assert sorted(r["text"] for r in read_results(out)) == [f"echo: dish {i} #{i}" for i in range(5)]
