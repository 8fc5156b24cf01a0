"""What a run cost: in each results line, the summary, the progress bar and ``llmclient run``; and
``max_cost``, which starts no more rows once the total would pass it, leaving a resumable output.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_support import ROWS, llmclient, read_results, write_jsonl

from llmclient import pipeline
from llmclient.backends.openai import OpenAICompatibleBackend
from llmclient.errors import InvalidRequestError
from llmclient.pipeline.progress import Progress, RunSummary
from llmclient.retry import RetryPolicy
from llmclient.testing.server import LoopbackServer, Reply, Request
from llmclient.testing.server.replies import completion, json_reply

COST = 0.25
"""What each reply of the ``billed`` server costs, as OpenRouter reports it."""


def billed_reply(request: Request) -> Reply:
    text = "echo: " + request.json()["messages"][-1]["content"]
    return json_reply(completion(text, usage={"prompt_tokens": 4, "completion_tokens": 3, "cost": COST}))


@pytest.fixture
def billed() -> Iterator[LoopbackServer]:
    with LoopbackServer(billed_reply) as server:
        yield server


def remote(server: LoopbackServer, **options) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend(
        "m", base_url=server.base_url, retry=RetryPolicy(max_attempts=1), **options
    )


def test_each_results_line_and_the_summary_hold_the_cost(billed, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with remote(billed) as backend:
        summary = pipeline.run(backend, ROWS, template="{{ dish }}", output=out, id_field="id")
    lines = read_results(out)
    assert {(line["usage"]["cost"], line["usage"]["cost_source"]) for line in lines} == {(COST, "provider")}
    assert summary.cost == pytest.approx(COST * len(ROWS))
    assert f"cost {COST * len(ROWS):g}" in str(summary)


def test_config_prices_cost_rows_where_the_provider_reports_none(echo, tmp_path: Path) -> None:
    _, server = echo
    out = tmp_path / "out.jsonl"
    prices = {"input_per_million": 1e6, "output_per_million": 0}  # a prompt token costs 1
    with remote(server, prices=prices) as backend:
        summary = pipeline.run(backend, ROWS[:2], template="{{ dish }}", output=out, id_field="id")
    lines = read_results(out)
    assert all(line["usage"]["cost"] == line["usage"]["prompt_tokens"] for line in lines)
    assert {line["usage"]["cost_source"] for line in lines} == {"config"}
    assert summary.cost == sum(line["usage"]["cost"] for line in lines)


def test_max_cost_stops_starting_rows_and_a_rerun_finishes_the_rest(billed, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    options = {"template": "{{ dish }}", "output": out, "id_field": "id", "concurrency": 1}
    with remote(billed) as backend:
        first = pipeline.run(backend, ROWS, max_cost=3.5 * COST, **options)
        assert (first.done, first.failed) == (3, 0)  # a 4th row would pass 3.5 rows' cost
        assert first.stopped is not None and "max_cost" in first.stopped
        assert "stopped early" in str(first)
        assert len(read_results(out)) == 3
        second = pipeline.run(backend, ROWS, **options)
    assert (second.done, second.skipped, second.stopped) == (len(ROWS) - 3, 3, None)
    assert sorted(line["row_id"] for line in read_results(out)) == [r["id"] for r in ROWS]


def test_rows_in_flight_finish_and_are_written_when_the_budget_is_reached(billed, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with remote(billed) as backend:
        summary = pipeline.run(
            backend, ROWS, template="{{ dish }}", output=out, id_field="id", concurrency=4, max_cost=COST
        )
    assert summary.stopped is not None
    assert 1 <= summary.done <= 4 and len(read_results(out)) == summary.done  # none lost


def test_max_cost_with_replies_of_unknown_cost_stops_and_says_to_set_prices(echo, tmp_path: Path) -> None:
    _, server = echo
    with remote(server) as backend:
        summary = pipeline.run(
            backend, ROWS, template="{{ dish }}", output=tmp_path / "o.jsonl", concurrency=1, max_cost=1.0
        )
    assert summary.done == 1 and summary.stopped is not None and "prices" in summary.stopped


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "1", True])
def test_max_cost_must_be_a_number_above_zero(bad, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="max_cost"):
        pipeline.RunOptions(template="x", output=tmp_path / "o", max_cost=bad)


def test_the_progress_bar_shows_the_running_cost(tmp_path: Path) -> None:
    summary = RunSummary(output=tmp_path / "o", done=2, cost=0.5, priced=2)
    stream = io.StringIO()
    Progress(summary, stream=stream, enabled=True).update(force=True)
    assert "cost 0.5" in stream.getvalue()


def test_llmclient_run_max_cost_exits_3_and_a_rerun_continues(billed, tmp_path: Path) -> None:
    (tmp_path / "llmclient.toml").write_text(
        f'default = "or"\n\n[backends.or]\ntype = "openai-compatible"\nmodel = "m"\n'
        f'base_url = "{billed.base_url}"\nretry = {{ max_attempts = 1 }}\n'
    )
    write_jsonl(tmp_path / "rows.jsonl", ROWS)
    args = ("run", "rows.jsonl", "-t", "{{ dish }}", "-o", "out.jsonl", "--id-field", "id", "-c", "1")
    stopped = llmclient(*args, "--max-cost", str(2.5 * COST), cwd=tmp_path)
    assert stopped.returncode == 3, stopped.stderr
    assert "max_cost" in stopped.stderr and "cost 0.5" in stopped.stdout
    done = llmclient(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(read_results(tmp_path / "out.jsonl")) == len(ROWS)
