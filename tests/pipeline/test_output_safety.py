"""The output is checked and locked before the first request; bad input stops with the fix (issue 12)."""

from __future__ import annotations

import math
import os

import pytest
from pipeline_support import ROWS, llmclient, read_results, write_jsonl

from llmclient import pipeline
from llmclient.errors import InvalidRequestError
from llmclient.pipeline import ResultsFile, RunOptions
from llmclient.pipeline.output import OutputError, OutputLock


def test_an_output_that_is_a_directory_is_refused_before_any_request(echo, backend, tmp_path) -> None:
    _, server = echo
    with pytest.raises(OutputError, match=r"is a directory; give a file path, e\.g\. '.*results\.jsonl'"):
        pipeline.run(backend, ROWS, template="{{ dish }}", output=tmp_path)
    with pytest.raises(OutputError, match="is a directory"):
        pipeline.run(backend, ROWS, template="{{ dish }}", output=tmp_path, dry_run=True)
    assert server.requests == []


def test_an_output_that_cannot_be_created_is_refused_before_any_request(echo, backend, tmp_path) -> None:
    _, server = echo
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OutputError, match=r"cannot write the output .*a-file/out\.jsonl"):
        pipeline.run(backend, ROWS, template="{{ dish }}", output=tmp_path / "a-file" / "out.jsonl")
    assert server.requests == []
    assert issubclass(OutputError, InvalidRequestError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_exits_2_before_any_request(project, echo) -> None:
    _, server = echo
    locked = project / "results"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = llmclient("run", "rows.jsonl", "-t", "{{ dish }}", "-o", "results/out.jsonl", cwd=project)
        with pytest.raises(OutputError, match="Permission denied"):
            pipeline.run(
                {"type": "openai-compatible", "model": "m", "base_url": server.base_url},
                ROWS,
                template="{{ dish }}",
                output=locked / "out.jsonl",
            )
    finally:
        locked.chmod(0o755)
    assert result.returncode == 2, result.stderr
    assert "cannot write the output 'results/out.jsonl': Permission denied" in result.stderr
    assert "Traceback" not in result.stderr
    assert server.requests == []


def test_a_second_writer_is_refused_naming_the_holder(echo, backend, tmp_path) -> None:
    _, server = echo
    out = tmp_path / "out.jsonl"
    with OutputLock(out), pytest.raises(OutputError) as refused:
        pipeline.run(backend, ROWS, template="{{ dish }}", output=out)
    assert refused.value.holder_pid == os.getpid()
    assert f"another run (pid {os.getpid()}) is writing" in str(refused.value)
    assert server.requests == []
    assert pipeline.run(backend, ROWS, template="{{ dish }}", output=out).done == len(ROWS)  # released


def test_a_dry_run_never_cuts_a_line_a_live_run_is_writing(backend, tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    pipeline.run(backend, ROWS[:2], template="{{ dish }}", output=out)
    with out.open("a") as handle:
        handle.write('{"row_id": 2, "key": "abc", "sta')  # a live run's line, half written
    before = out.read_bytes()
    with OutputLock(out):  # the live run holds the lock
        summary = pipeline.run(backend, ROWS, template="{{ dish }}", output=out, dry_run=True)
    assert (summary.skipped, summary.dry_run) == (2, True)
    assert out.read_bytes() == before
    assert ResultsFile(out).scan(repair=False).done and out.read_bytes() == before


def test_a_power_cut_tail_of_nul_bytes_is_cut_off_by_the_next_run(backend, tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    pipeline.run(backend, ROWS[:3], template="{{ dish }}", output=out)
    whole = out.read_bytes()
    out.write_bytes(whole + b"\0" * 300 + b"\n" + b"\0" * 40 + b"\n")
    summary = pipeline.run(backend, ROWS, template="{{ dish }}", output=out)
    assert (summary.done, summary.skipped) == (len(ROWS) - 3, 3)
    assert out.read_bytes().startswith(whole) and b"\0" not in out.read_bytes()
    assert len(read_results(out)) == len(ROWS)


def test_nul_bytes_followed_by_whole_lines_are_refused_untouched(tmp_path) -> None:
    path = tmp_path / "out.jsonl"
    damaged = b'{"row_id": 1, "key": "a", "status": "ok"}\n' + b"\0" * 10 + b"\n"
    damaged += b'{"row_id": 2, "key": "b", "status": "ok"}\n'
    path.write_bytes(damaged)
    with pytest.raises(InvalidRequestError, match=r"out\.jsonl:2 holds NUL bytes but whole lines follow"):
        ResultsFile(path).scan()
    assert path.read_bytes() == damaged


@pytest.mark.parametrize("rpm", [0, -5, math.nan, math.inf, True])
def test_requests_per_minute_must_be_a_number_above_0(rpm) -> None:
    with pytest.raises(InvalidRequestError, match=r"requests_per_minute \(--rpm\) must be a number above 0"):
        RunOptions(template="{{ a }}", output="o.jsonl", requests_per_minute=rpm)


@pytest.mark.parametrize("few_shot", ["user: hi", {"role": "user", "content": "hi"}])
def test_few_shot_must_be_a_list_of_messages(few_shot) -> None:
    with pytest.raises(InvalidRequestError, match="few_shot must be a list of messages"):
        RunOptions(template="{{ a }}", output="o.jsonl", few_shot=few_shot)


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (None, ["--rpm", "0"], "--rpm: must be a number of requests per minute above 0, got '0'"),
        (None, ["--rpm", "nan"], "above 0, got 'nan'"),
        (None, ["--rpm", "-3"], "above 0, got '-3'"),
        (None, ["-o", "."], "the output '.' is a directory; give a file path"),
        ({"rows.jsonl": b'{"dish": "caf\xe9"}\n'}, [], "rows.jsonl:1 is not UTF-8 text (byte 0xe9)"),
        ({"rows.jsonl": b'{"dish": "caf\xe9"}\n'}, [], "iconv -f latin1 -t utf-8"),
        ({"rows.csv": b"dish\nsoup, hot\nstew\n"}, ["--input", "rows.csv"], "rows.csv:2 has 2 fields"),
        ({"rows.csv": b"dish\ncaf\xe9\n"}, ["--input", "rows.csv"], "rows.csv:2 is not UTF-8 text"),
        ({"shots.json": b"[{'role': 'user'}]"}, ["--few-shot", "shots.json"], "is not valid JSON"),
        ({"shots.json": b'{"role": "user"}'}, ["--few-shot", "shots.json"], "holds a JSON dict"),
        ({"shots.json": b"\xff["}, ["--few-shot", "shots.json"], "is not UTF-8 text"),
    ],
)
def test_bad_input_and_output_exit_2_with_the_fix(echo, project, setup, args, message) -> None:
    _, server = echo
    for name, data in (setup or {}).items():
        (project / name).write_bytes(data)
    source = "rows.jsonl"
    if "--input" in args:
        source = args[args.index("--input") + 1]
        args = [a for a in args if a not in ("--input", source)]
    output = [] if "-o" in args else ["-o", "out.jsonl"]
    result = llmclient("run", source, "-t", "{{ dish }}", *output, *args, cwd=project)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert server.requests == []


def test_a_bad_line_after_good_rows_keeps_the_answered_rows(echo, project) -> None:
    write_jsonl(project / "rows.jsonl", ROWS[:3])
    with (project / "rows.jsonl").open("ab") as handle:
        handle.write(b'{"dish": "caf\xe9"}\n')
    result = llmclient("run", "rows.jsonl", "-t", "{{ dish }}", "-o", "out.jsonl", cwd=project)
    assert result.returncode == 2 and "rows.jsonl:4 is not UTF-8 text" in result.stderr
    assert len(read_results(project / "out.jsonl")) == 3


def test_nulls_empty_from_the_command_line(echo, project) -> None:
    _, server = echo
    write_jsonl(project / "rows.jsonl", [{"dish": "soup", "note": None}])
    args = ("run", "rows.jsonl", "-t", "{{ dish }}/{{ note }}", "-o", "out.jsonl")
    failed = llmclient(*args, cwd=project)
    assert failed.returncode == 1 and server.requests == []
    assert "'note' is null in this row" in (project / "out.jsonl").read_text()
    done = llmclient(*args, "--nulls", "empty", "--retry-failed", cwd=project)
    assert done.returncode == 0, done.stderr
    assert server.requests[-1].json()["messages"][-1]["content"] == "soup/"
