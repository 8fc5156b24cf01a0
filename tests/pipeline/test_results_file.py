"""The results file read back to resume: line by line, a killed run's partial line repaired."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from llmclient.errors import InvalidRequestError
from llmclient.pipeline import ResultsFile
from llmclient.pipeline.keys import compact_key


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


def written(path: Path, records: list[tuple[int, str]], text: str = "y" * 150) -> list[int]:
    """Lines as a run writes them (index, key, status first), for ``(key number, status)``; their offsets."""
    results, offsets = ResultsFile(path), []
    for index, (number, status) in enumerate(records):
        offsets.append(path.stat().st_size if path.exists() else 0)
        results.append({"index": index, "key": f"{number:024x}", "status": status, "text": text})
    results.close()
    return offsets


def last_words(records: list[tuple[int, str]]) -> tuple[set[str], set[str]]:
    """The done and failed keys the rules give: an ok line is done for good, else the last error fails."""
    done = {f"{n:024x}" for n, status in records if status == "ok"}
    return done, {f"{n:024x}" for n, _ in records} - done


def test_a_scan_over_many_blocks_of_written_lines_keeps_each_keys_last_word(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    records = [(i, "ok") for i in range(6000)]  # about 1.3 MB: blocks of ok lines only
    records += [(i, "error") for i in range(5990, 6010)]  # an error after ok stays done; new keys fail
    records += [(i, "ok") for i in range(6005, 6008)]  # ok after an error: done
    written(path, records)
    assert path.stat().st_size > 1_000_000
    finished = ResultsFile(path).scan()
    assert (finished.done, finished.failed) == last_words(records)


def test_line_reading_takes_over_mid_file_with_the_right_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    written(path, [(i, "ok") for i in range(5000)])
    with path.open("a") as handle:
        handle.write("\n" + line("old-format") + '{"unrelated": true}\n')
    with pytest.raises(InvalidRequestError, match=r"o\.jsonl:5003 is not a llmclient result line"):
        ResultsFile(path).scan()


@pytest.mark.parametrize(
    "tail",
    [b"\0" * 4096 + b"\n\n" + b'{"index":5001,"key":"', b'{"index":5001,"key":"'],
    ids=["power-cut", "killed-mid-write"],
)
def test_a_damaged_tail_after_blocks_of_written_lines_is_cut_at_the_last_whole_line(
    tmp_path: Path, tail: bytes
) -> None:
    path = tmp_path / "o.jsonl"
    written(path, [(i, "ok") for i in range(5000)] + [(7, "error"), (5000, "error")])
    whole = path.stat().st_size
    with path.open("ab") as handle:
        handle.write(tail)
    finished = ResultsFile(path).scan()
    assert len(finished.done) == 5000 and finished.failed == {f"{5000:024x}"}
    assert path.stat().st_size == whole


def test_heads_across_blocks_and_a_takeover_give_each_lines_offset_index_key_and_status(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.jsonl"
    written(path, [(i, "ok" if i % 7 else "error") for i in range(3000)])  # about 600 KB: several blocks
    with path.open("a") as handle:
        handle.write("\n" + line("old-format") + "\n")  # line by line from here on
    written(path, [(i, "ok") for i in range(3000, 3100)])
    expected, offset = [], 0  # the oracle: every line parsed whole
    for text in path.read_bytes().splitlines(keepends=True):
        if text.strip():
            record = json.loads(text)
            expected.append(
                (offset, record.get("index"), compact_key(record["key"]), record["status"] == "ok")
            )
        offset += len(text)
    results = ResultsFile(path)
    with path.open("rb") as handle:
        assert list(results.heads(handle)) == expected
    assert results.intact == path.stat().st_size and len(expected) == 3101
