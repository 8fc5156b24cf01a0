"""Where rows come from: JSON Lines, CSV, Parquet (with pyarrow), or any iterable of dicts."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sized
from pathlib import Path
from typing import Any

from llmclient.errors import InvalidRequestError

BOM = b"\xef\xbb\xbf"
_EXTRA = "\0extra"  # where DictReader puts the values of a row longer than the header

_decoder = json.JSONDecoder()  # json.loads's own, without the checks around it
_LINE_ENDS = ("\n", "", "\r\n")

RowSource = str | os.PathLike[str] | Iterable[Mapping[str, Any]]
"""A dataset path (``.jsonl``, ``.json``, ``.csv``, ``.parquet``) or an iterable of dict rows."""


def read_rows(source: RowSource) -> Iterator[dict[str, Any]]:
    """Yield the rows of ``source`` as dicts, lazily, so a large file is never held in memory."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InvalidRequestError(f"input file {str(path)!r} does not exist")
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson", ".json"):
            return _jsonl(path)
        if suffix == ".csv":
            return _csv(path)
        if suffix == ".parquet":
            return _parquet(path)
        raise InvalidRequestError(
            f"cannot read {str(path)!r}: unknown extension {suffix!r}; use .jsonl, .csv or .parquet"
        )
    return _checked(source)


def _checked(rows: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InvalidRequestError(f"row {index} is a {type(row).__name__}, not a dict of fields")
        yield dict(row)


def _lines(path: Path) -> Iterator[str]:
    """The file's lines as text, a byte order mark dropped, a byte that is not UTF-8 named by line."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield (raw.removeprefix(BOM) if number == 1 else raw).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidRequestError(
                    f"{path}:{number} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); save the file "
                    f"as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name} > utf8-{path.name}"
                ) from exc


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Each line's object. A line that is one object and a newline (nearly every line) is parsed by
    the decoder's ``raw_decode``, without ``json.loads``'s checks around it (a third of a million
    rows' reading time); any other line goes through ``json.loads``, for its errors.
    """
    decode = _decoder.raw_decode
    for number, line in enumerate(_lines(path), start=1):
        try:
            row, end = decode(line)
        except ValueError:
            end = -1
        if end < 0 or type(row) is not dict or line[end:] not in _LINE_ENDS:
            if not line.strip():
                continue
            row = _strict_row(path, number, line)
        yield row


def _strict_row(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise InvalidRequestError(f"{path}:{number} is not valid JSON: {exc}") from exc
    if not isinstance(row, dict):
        raise InvalidRequestError(f"{path}:{number} is a JSON {type(row).__name__}, not an object")
    return row


def _csv(path: Path) -> Iterator[dict[str, Any]]:
    reader = csv.DictReader(_lines(path), restkey=_EXTRA)
    try:
        for row in reader:
            if _EXTRA in row:
                width = len(reader.fieldnames or ())
                raise InvalidRequestError(
                    f"{path}:{reader.line_num} has {width + len(row[_EXTRA])} fields but the header has "
                    f'{width}; quote values that hold commas ("a, b") or fix the header'
                )
            yield row
    except csv.Error as exc:
        raise InvalidRequestError(f"{path}:{reader.line_num} is not valid CSV: {exc}") from exc


def _parquet(path: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise InvalidRequestError(f"reading {path} needs pyarrow: pip install pyarrow") from exc
    for batch in pq.ParquetFile(path).iter_batches():
        yield from batch.to_pylist()


def count_rows(source: RowSource) -> int | None:
    """How many rows ``source`` holds, where that is cheap to know (files, sized collections)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson", ".json"):
            with path.open("rb") as handle:
                return sum(1 for line in handle if line.strip())
        if suffix == ".csv":
            try:
                return sum(1 for _ in csv.DictReader(_lines(path)))
            except (InvalidRequestError, csv.Error):
                return None  # reading the rows reports it, with the line
        return None
    return len(source) if isinstance(source, Sized) else None
