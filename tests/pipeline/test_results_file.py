"""The results file read back to resume: line by line, a killed run's partial line repaired."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from llmclient.errors import InvalidRequestError
from llmclient.pipeline import ResultsFile


def line(key: str, status: str = "ok", text: str = "") -> str:
    return json.dumps({"row_id": key, "key": key, "status": status, "text": text}) + "\n"


def test_scan_reads_done_and_failed_keys_the_last_word_winning(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    path.write_text(
        line("a") + "\n" + line("b", "error") + line("c", "error") + line("c") + line("a", "error")
    )
    finished = ResultsFile(path).scan()
    assert (finished.done, finished.failed) == ({"a", "c"}, {"b"})


def test_scan_cuts_off_a_partial_last_line_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    whole = line("a") + line("b")
    path.write_text(whole + '{"row_id": "c", "key": "c", "sta')
    assert ResultsFile(path).scan().done == {"a", "b"}
    assert path.read_text() == whole
    assert ResultsFile(path).scan().done == {"a", "b"} and path.read_text() == whole


def test_a_file_that_is_not_a_results_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    text = line("a") + '{"unrelated": true}\n' + "a partial last line"
    path.write_text(text)
    with pytest.raises(InvalidRequestError, match=r"notes\.jsonl:2 is not a llmclient result line"):
        ResultsFile(path).scan()
    assert path.read_text() == text


def test_scan_streams_so_memory_holds_the_keys_not_the_file(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    reply = "x" * 4000
    with path.open("w") as handle:
        for i in range(4000):
            handle.write(line(f"k{i}", text=reply))
    size = path.stat().st_size
    assert size > 16_000_000
    tracemalloc.start()
    try:
        finished = ResultsFile(path).scan()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(finished.done) == 4000
    assert peak < size / 8, f"scan of a {size} byte file peaked at {peak} bytes"
