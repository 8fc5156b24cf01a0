"""Where rows come from: JSON Lines, CSV, Parquet (with pyarrow), or any iterable of dicts."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sized
from pathlib import Path
from typing import Any

from llmclient.errors import InvalidRequestError

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


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise InvalidRequestError(f"{path}:{number} is not valid JSON: {exc}") from exc
            if not isinstance(row, dict):
                raise InvalidRequestError(f"{path}:{number} is a JSON {type(row).__name__}, not an object")
            yield row


def _csv(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8", newline="") as handle:
        yield from csv.DictReader(handle)


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
            with path.open(encoding="utf-8", newline="") as handle:
                return sum(1 for _ in csv.DictReader(handle))
        return None
    return len(source) if isinstance(source, Sized) else None
