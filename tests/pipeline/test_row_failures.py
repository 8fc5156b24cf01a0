"""Every row ends in exactly one line: never vanished, never done twice, never mis-keyed (issue 12)."""

from __future__ import annotations

import datetime
import json
from collections import Counter
from decimal import Decimal

import pytest
from pipeline_support import EchoBackend, read_results, write_jsonl

from llmclient import pipeline
from llmclient.types import GenerationParams


def test_a_row_with_a_lone_surrogate_fails_with_an_error_line_not_silently(echo, backend, tmp_path) -> None:
    _, server = echo
    source = tmp_path / "rows.jsonl"
    # what JavaScript writes when it cuts an emoji: valid JSON, not encodable as UTF-8
    source.write_text('{"t": "fine"}\n{"t": "cut \\ud83d"}\n{"t": "also fine"}\n')
    out = tmp_path / "out.jsonl"
    summary = pipeline.run(backend, source, template="{{ t }}", output=out)
    assert (summary.total, summary.done, summary.failed) == (3, 2, 1)
    lines = read_results(out)  # every line is valid UTF-8 JSON, the surrogate escaped
    assert len(lines) == 3 and len(server.requests) == 2
    failed = next(line for line in lines if line["status"] == "error")
    assert failed["input"] == {"t": "cut \ud83d"}
    assert failed["error"]["type"] == "InvalidRequestError"
    assert "lone UTF-16 surrogate (\\ud83d)" in failed["error"]["message"]
    again = pipeline.run(backend, source, template="{{ t }}", output=out)
    assert (again.done, again.skipped) == (0, 3)


def test_any_exception_escaping_a_row_fails_that_row_with_its_type(tmp_path) -> None:
    rows = [{"t": "one"}, {"t": "a BUG here"}, {"t": "three"}]
    out = tmp_path / "out.jsonl"
    with EchoBackend() as backend:
        summary = pipeline.run(backend, rows, template="{{ t }}", output=out)
    assert (summary.done, summary.failed) == (2, 1)
    failed = next(line for line in read_results(out) if line["status"] == "error")
    assert failed["input"] == {"t": "a BUG here"}
    assert failed["error"] == {
        "type": "ValueError",
        "message": "cannot handle 'a BUG here'",
        "status_code": None,
    }


def test_a_template_that_fails_on_a_row_value_fails_only_that_row(backend, tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    summary = pipeline.run(backend, [{"n": 1}, {"n": "x"}], template="{{ n + 1 }}", output=out)
    assert (summary.done, summary.failed) == (1, 1)
    failed = next(line for line in read_results(out) if line["status"] == "error")
    assert failed["error"]["type"] == "TemplateError" and "TypeError" in failed["error"]["message"]


def test_values_json_cannot_hold_are_written_as_strings_and_resume(backend, tmp_path) -> None:
    row = {
        "id": 1,
        "when": datetime.datetime(2026, 1, 2, 3, 4, 5),
        "day": datetime.date(2026, 1, 2),
        "price": Decimal("9.90"),
        "raw": b"caf\xc3\xa9",
    }
    out = tmp_path / "out.jsonl"
    first = pipeline.run(backend, [row], template="{{ price }}", output=out, id_field="id")
    assert first.done == 1
    (line,) = read_results(out)
    assert line["input"] == {
        "id": 1,
        "when": "2026-01-02T03:04:05",
        "day": "2026-01-02",
        "price": "9.90",
        "raw": "café",
    }
    again = pipeline.run(backend, [row], template="{{ price }}", output=out)  # keyed by content this time
    assert again.done == 1
    assert pipeline.run(backend, [row], template="{{ price }}", output=out).skipped == 1


def test_parquet_timestamps_are_written_as_strings(backend, tmp_path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist([{"t": datetime.datetime(2026, 5, 1, 12, 0)}]), path)
    out = tmp_path / "out.jsonl"
    assert pipeline.run(backend, path, template="{{ t }}", output=out).done == 1
    assert read_results(out)[0]["input"]["t"] == "2026-05-01T12:00:00"


def test_rows_sharing_an_id_with_other_fields_fail_naming_both_rows(echo, backend, tmp_path) -> None:
    _, server = echo
    rows = [{"id": "a", "t": "x"}, {"id": "b", "t": "y"}, {"id": "a", "t": "z"}, {"id": "b", "t": "y"}]
    out = tmp_path / "out.jsonl"
    summary = pipeline.run(backend, rows, template="{{ t }}", output=out, id_field="id")
    assert (summary.done, summary.failed, summary.duplicates) == (2, 1, 1)
    assert len(server.requests) == 2
    failed = next(line for line in read_results(out) if line["status"] == "error")
    assert failed["input"] == {"id": "a", "t": "z"}
    assert "row 2 has the id 'a' of row 0 but other fields" in failed["error"]["message"]
    again = pipeline.run(backend, rows, template="{{ t }}", output=out, id_field="id")
    assert (again.done, again.failed, again.skipped) == (0, 0, 3)
    assert len(read_results(out)) == 3


def test_a_row_without_its_id_gets_one_error_line_not_one_per_rerun(backend, tmp_path) -> None:
    rows = [{"id": 1, "t": "x"}, {"t": "no id"}, {"id": None, "t": "null id"}]
    out = tmp_path / "out.jsonl"
    for _ in range(3):
        pipeline.run(backend, rows, template="{{ t }}", output=out, id_field="id")
    lines = read_results(out)
    assert Counter(line["status"] for line in lines) == {"ok": 1, "error": 2}
    messages = sorted(line["error"]["message"] for line in lines if line["error"])
    assert "row 1 has no id field 'id'" in messages[0]
    assert "row 2 has a null id field 'id'" in messages[1]


def test_ids_that_change_json_type_across_exports_are_one_id(echo, backend, tmp_path) -> None:
    _, server = echo
    out = tmp_path / "out.jsonl"
    pipeline.run(backend, [{"id": 7, "t": "a"}], template="{{ t }}", output=out, id_field="id")
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text("id,t\n7,a\n8,b\n")
    from_csv = pipeline.run(backend, csv_path, template="{{ t }}", output=out, id_field="id")
    as_float = pipeline.run(
        backend, [{"id": 7.0, "t": "a"}, {"id": 8.0, "t": "b"}], template="{{ t }}", output=out, id_field="id"
    )
    assert (from_csv.done, from_csv.skipped, as_float.skipped) == (1, 1, 2)
    assert len(server.requests) == 2


def test_a_byte_order_mark_is_not_part_of_the_first_csv_header(backend, tmp_path) -> None:
    csv_path = tmp_path / "excel.csv"
    csv_path.write_bytes(b"\xef\xbb\xbfid,t\n1,hello\n")
    out = tmp_path / "out.jsonl"
    summary = pipeline.run(backend, csv_path, template="{{ t }}", output=out, id_field="id")
    assert summary.done == 1
    assert read_results(out)[0]["input"] == {"id": "1", "t": "hello"}


def test_the_key_covers_configured_defaults_backend_type_and_endpoint(tmp_path) -> None:
    rows = [{"t": "x"}, {"t": "y"}]
    out = tmp_path / "out.jsonl"

    def run(backend: EchoBackend) -> int:
        with backend:
            return pipeline.run(backend, rows, template="{{ t }}", output=out).done

    assert run(EchoBackend(defaults=GenerationParams(max_new_tokens=8))) == 2
    assert run(EchoBackend(defaults=GenerationParams(max_new_tokens=8))) == 0
    assert run(EchoBackend(defaults=GenerationParams(max_new_tokens=512))) == 2  # raised in the config
    assert run(EchoBackend(endpoint="http://a.example/v1")) == 2
    assert run(EchoBackend(endpoint="http://b.example/v1")) == 2  # another server, same model name
    assert run(EchoBackend(endpoint="http://b.example/v1")) == 0

    class OtherEcho(EchoBackend):
        type_name = "other-echo"

    assert run(OtherEcho(endpoint="http://b.example/v1")) == 2


def test_the_run_key_params_are_the_effective_ones(tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    with EchoBackend(defaults=GenerationParams(temperature=0)) as configured:
        assert pipeline.run(configured, [{"t": "x"}], template="{{ t }}", output=out).done == 1
    with EchoBackend() as explicit:  # the same effective parameters, given per run
        again = pipeline.run(
            explicit, [{"t": "x"}], template="{{ t }}", output=out, params={"temperature": 0}
        )
    assert again.skipped == 1


@pytest.mark.parametrize(
    ("rows", "csv_text"),
    [([{"dish": "soup", "comment": None}], None), (None, "dish,comment\nsoup\n")],
    ids=["json-null", "short-csv-row"],
)
def test_a_null_field_fails_the_row_instead_of_rendering_none(
    echo, backend, tmp_path, rows, csv_text
) -> None:
    _, server = echo
    source = rows
    if csv_text is not None:
        source = tmp_path / "rows.csv"
        source.write_text(csv_text)
    out = tmp_path / "out.jsonl"
    summary = pipeline.run(backend, source, template="{{ dish }}: {{ comment }}", output=out)
    assert (summary.done, summary.failed) == (0, 1) and server.requests == []
    error = read_results(out)[0]["error"]
    assert error["type"] == "TemplateError"
    assert "'comment' is null in this row" in error["message"] and "nulls='empty'" in error["message"]
    empty = pipeline.run(
        backend, source, template="{{ dish }}: {{ comment }}", output=out, nulls="empty", retry_failed=True
    )
    assert empty.done == 1
    assert server.requests[-1].json()["messages"][-1]["content"] == "soup: "


def test_a_null_the_template_only_tests_is_fine(backend, tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    template = "{{ dish }}{% if comment %}: {{ comment }}{% endif %}"
    summary = pipeline.run(backend, [{"dish": "soup", "comment": None}], template=template, output=out)
    assert summary.done == 1 and read_results(out)[0]["text"] == "echo: soup"


def test_result_lines_are_json_with_the_row_as_given(backend, tmp_path) -> None:
    source = write_jsonl(tmp_path / "rows.jsonl", [{"t": "ok ✓"}])
    out = tmp_path / "out.jsonl"
    pipeline.run(backend, source, template="{{ t }}", output=out)
    assert json.loads(out.read_text(encoding="utf-8"))["input"] == {"t": "ok ✓"}
