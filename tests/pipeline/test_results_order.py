"""A results file read back in input order, one record per row, by ``pipeline.read_results``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_support import EchoBackend

from llmclient import pipeline
from llmclient.errors import InvalidRequestError


def test_records_come_once_per_row_in_input_order_a_retried_row_by_its_ok_line(
    echo, backend, tmp_path
) -> None:
    handler, _ = echo
    rows = [{"id": i, "text": "FAIL me" if i in (3, 11) else f"text {i}"} for i in range(30)]
    out = tmp_path / "out.jsonl"
    first = pipeline.run(backend, rows, template="{{ text }}", output=out, id_field="id", concurrency=8)
    assert (first.done, first.failed) == (28, 2)
    handler.failing = False
    retried = pipeline.run(backend, rows, template="{{ text }}", output=out, id_field="id", retry_failed=True)
    assert retried.done == 2
    written = [json.loads(line)["index"] for line in out.read_text().splitlines()]
    assert written != sorted(written) and len(written) == 32  # completion order, the retries last
    records = list(pipeline.read_results(out))
    assert [r["index"] for r in records] == list(range(30))
    assert [r["row_id"] for r in records] == list(range(30))
    assert all(r["status"] == "ok" for r in records)
    assert records[3]["text"] == "echo: FAIL me"


def test_each_line_starts_with_index_key_and_status(backend, tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    pipeline.run(backend, [{"t": "a"}, {"t": "b"}], template="{{ t }}", output=out)
    for index, line in enumerate(out.read_text().splitlines()):
        assert list(json.loads(line))[:4] == ["index", "key", "status", "row_id"]
        assert line.startswith(f'{{"index":{index},"key":"')


def test_an_ok_line_is_never_replaced_by_a_later_error_for_its_row(tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    write(
        out,
        {"index": 0, "key": "a", "status": "ok", "text": "kept"},
        {"index": 0, "key": "a", "status": "error"},
    )
    assert [r["text"] for r in pipeline.read_results(out)] == ["kept"]


def test_lines_written_before_lines_had_an_index_come_first_in_file_order(tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    write(
        out,
        {"row_id": "b", "key": "kb", "status": "ok"},
        {"row_id": "c", "key": "kc", "status": "error"},
        {"row_id": "a", "key": "ka", "status": "ok"},
        {"index": 1, "key": "ky", "status": "ok", "row_id": "y"},
        {"index": 0, "key": "kx", "status": "ok", "row_id": "x"},
        {"index": 2, "key": "kc", "status": "ok", "row_id": "c"},  # its retry, by a newer llmclient
    )
    assert [r["row_id"] for r in pipeline.read_results(out)] == ["b", "a", "x", "y", "c"]


def test_rows_of_another_template_in_the_same_output_keep_their_own_records(tmp_path) -> None:
    rows, out = [{"t": "one"}, {"t": "two"}], tmp_path / "out.jsonl"
    with EchoBackend() as backend:
        pipeline.run(backend, rows, template="{{ t }}", output=out)
        pipeline.run(backend, rows, template="Say {{ t }}", output=out)
    texts = [(r["index"], r["text"]) for r in pipeline.read_results(out)]
    assert texts == [(0, "echo: one"), (0, "echo: Say one"), (1, "echo: two"), (1, "echo: Say two")]


def test_a_partial_last_line_is_left_out_and_the_file_left_alone(tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    write(out, {"index": 0, "key": "a", "status": "ok"})
    text = out.read_text() + '{"index":1,"key":"b","sta'
    out.write_text(text)
    assert [r["key"] for r in pipeline.read_results(out)] == ["a"]
    assert out.read_text() == text


def test_a_missing_file_a_folder_and_a_foreign_line_are_refused_saying_what_to_give(tmp_path) -> None:
    with pytest.raises(InvalidRequestError, match="does not exist; give the --output of a run"):
        pipeline.read_results(tmp_path / "nothing.jsonl")
    with pytest.raises(InvalidRequestError, match="is a folder; give the results file"):
        pipeline.read_results(tmp_path)
    out = tmp_path / "notes.jsonl"
    write(out, {"index": 0, "key": "a", "status": "ok"}, {"note": "not a result"})
    with pytest.raises(InvalidRequestError, match=r"notes\.jsonl:2 is not a llmclient result line"):
        list(pipeline.read_results(out))


def write(path: Path, *records: dict[str, object]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
