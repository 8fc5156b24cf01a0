"""Reading JSON Lines input: each line's object exactly as json.loads reads it, bad lines named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmclient.errors import InvalidRequestError
from llmclient.pipeline.rows import read_rows

LINES = [
    '{"id": 1, "t": "plain"}\n',
    '   {"id": 2, "t": "leading spaces"}\n',
    '{"id": 3, "t": "trailing spaces"}   \t\n',
    '{"id": 4, "t": "windows line end"}\r\n',
    "\n",
    "  \t \n",
    '{"id": 5, "t": "caf\\u00e9 \\ud83c\\udf72 é", "nested": {"b": [1, 2.5, null, true]}}\n',
    '{"id": 6, "big": 123456789012345678901234567890, "f": 1e400, "n": NaN}\n',
    '{"id": 7, "t": "no newline at the end"}',
]


def test_every_line_reads_as_json_loads_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(LINES).encode())
    expected = [json.loads(text) for text in LINES if text.strip()]
    got = list(read_rows(path))
    assert [row["id"] for row in got] == [1, 2, 3, 4, 5, 6, 7]
    assert json.dumps(got) == json.dumps(expected)  # NaN compares unequal to itself; its text does not


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id": 1}{"id": 2}\n', "rows.jsonl:2 is not valid JSON: Extra data"),
        ('{"id": 1} x\n', "rows.jsonl:2 is not valid JSON: Extra data"),
        ('{"id": 1,}\n', "rows.jsonl:2 is not valid JSON: Expecting property name"),
        ('[{"id": 1}]\n', "rows.jsonl:2 is a JSON list, not an object"),
        ('"text"\n', "rows.jsonl:2 is a JSON str, not an object"),
        ('{"id": 1}\u3000\n', "rows.jsonl:2 is not valid JSON: Extra data"),  # not JSON's whitespace
    ],
)
def test_a_line_that_is_not_one_object_is_named_with_its_number(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": 0}\n' + text, encoding="utf-8")
    rows = read_rows(path)
    assert next(rows) == {"id": 0}
    with pytest.raises(InvalidRequestError, match=message):
        next(rows)
