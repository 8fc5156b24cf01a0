"""The ray engine through the loopback server: the batch runner's lines, keys, errors and resume."""

from __future__ import annotations

from pathlib import Path

import pytest
from scale_support import (
    RAY_WARNINGS,
    EchoServer,
    comparable,
    echo_config,
    lines_by_key,
    read_jsonl,
    shard_lines,
)

from llmclient import pipeline
from llmclient.errors import InvalidRequestError
from llmclient.pipeline import OutputError
from llmclient.scale import ray as engine
from llmclient.scale.shards import read_results
from llmclient.testing.server import LoopbackServer

ROWS = [
    *({"id": i, "dish": f"dish {i}"} for i in range(9)),
    {"id": 9, "dish": "FAIL soup"},  # the server refuses it: an error line, the batch goes on
    {"id": 10},  # no 'dish': a template error, found by the driver before any request
    {"id": 3, "dish": "dish 3"},  # a duplicate of row 3: answered once
]
TEMPLATE = "Describe {{ dish }}"

pytestmark = RAY_WARNINGS


def test_rows_on_two_actors_equal_the_batch_runner(
    ray_cluster: str, echo: tuple[EchoServer, LoopbackServer], tmp_path: Path
) -> None:
    _, server = echo
    config = echo_config(server)
    summary = engine.run(
        config, ROWS, template=TEMPLATE, output=tmp_path / "out", actors=2, batch_size=3, progress=False
    )
    expected = pipeline.run(config, ROWS, template=TEMPLATE, output=tmp_path / "one.jsonl", progress=False)

    got = shard_lines(tmp_path / "out")
    want = lines_by_key(read_jsonl(tmp_path / "one.jsonl"))
    assert got.keys() == want.keys()
    assert {k: comparable(v) for k, v in got.items()} == {k: comparable(v) for k, v in want.items()}
    assert got[next(k for k, v in want.items() if v["row_id"] == 0)]["text"] == "echo: Describe dish 0"
    counts = ("total", "done", "failed", "skipped", "duplicates", "prompt_tokens", "completion_tokens")
    assert {c: getattr(summary, c) for c in counts} == {c: getattr(expected, c) for c in counts}
    assert (summary.done, summary.failed, summary.duplicates) == (9, 2, 1)
    assert len(list((tmp_path / "out").glob("part-*.jsonl"))) >= 2  # the driver's shard and the actors'


def test_rerun_skips_what_is_done_and_retries_failed_rows(
    ray_cluster: str, echo: tuple[EchoServer, LoopbackServer], tmp_path: Path
) -> None:
    handler, server = echo
    config, out = echo_config(server), tmp_path / "out"
    run = dict(template=TEMPLATE, output=out, actors=2, batch_size=4, progress=False)
    engine.run(config, ROWS, **run)
    before, written = len(server.requests), len(list(read_results(out)))

    again = engine.run(config, ROWS, **run)
    assert (again.done, again.failed, again.skipped) == (0, 0, 11)
    assert len(server.requests) == before  # nothing scheduled
    assert len(list(read_results(out))) == written

    handler.failing = False
    retried = engine.run(config, ROWS, **run, retry_failed=True)
    assert (retried.done, retried.failed) == (1, 1)  # the server answers now; the template still fails
    lines = list(read_results(out))
    assert sorted(line["status"] for line in lines if line["input"].get("dish") == "FAIL soup") == [
        "error",
        "ok",
    ]
    assert len({line["key"] for line in lines if line["status"] == "ok"}) == 10
    assert len(lines) == 11 + 2  # a new line for each retried row, as the batch runner writes


def test_dry_run_counts_and_writes_nothing(echo: tuple[EchoServer, LoopbackServer], tmp_path: Path) -> None:
    _, server = echo
    summary = engine.run(echo_config(server), ROWS, template=TEMPLATE, output=tmp_path / "out", dry_run=True)
    assert (summary.total, summary.failed, summary.duplicates) == (12, 1, 1)
    assert not (tmp_path / "out").exists()
    assert server.requests == []


def test_a_built_backend_is_refused(tmp_path: Path) -> None:
    import llmclient

    with (
        llmclient.load(
            {"type": "openai-compatible", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
        ) as built,
        pytest.raises(InvalidRequestError, match="builds one backend per actor from a configuration"),
    ):
        engine.run(built, ROWS, template=TEMPLATE, output=tmp_path / "out")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"actors": 0}, "actors must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"max_cost": 1.0}, "max_cost .* is not supported by the ray engine"),
    ],
)
def test_bad_engine_arguments_are_refused_before_anything_runs(
    arguments: dict[str, object], message: str, tmp_path: Path
) -> None:
    config = {"type": "openai-compatible", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
    with pytest.raises(InvalidRequestError, match=message):
        engine.run(config, ROWS, template=TEMPLATE, output=tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()


def test_an_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_text("")
    config = {"type": "openai-compatible", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
    with pytest.raises(OutputError, match="is a file; the ray engine writes a folder"):
        engine.run(config, ROWS, template=TEMPLATE, output=tmp_path / "results.jsonl")
