"""A results file read back as rows: one record per row, in the order of the input.

Rows are appended to the results file as they finish, which is what makes a run crash-safe: the
file is in completion order, and a row that failed and was retried later has two lines.
:func:`read_results` gives each row once, in input order, reading the file twice line by line
rather than holding it: the first pass notes where each row's winning line is, the second reads
those lines in order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmclient.errors import InvalidRequestError
from llmclient.pipeline.results import ResultsFile

_OFFSETS = 41
"""Bits of a line's byte offset in a winner's entry (2 TiB); the row's index is above them."""
_BUFFER = 1 << 20
"""Bytes read at a time in the second pass: winners a few lines apart are then read without a seek."""


def read_results(output: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Each row's record in the results file ``output``, once per row, in input order.

    A row's record is its last ``ok`` line, else its last error line: a retried row's ``ok``
    replaces its earlier error, as a rerun counts it done. Records come in the order of their
    ``index`` (the row's position in the input); lines written before lines had an ``index``
    (llmclient before issue 17) come first, in the order they were written. Rows of different runs
    in one output (another template, other parameters: other keys) each keep their own record,
    side by side at their index. A partial last line (a run killed mid-write) or a tail of NUL
    bytes is left out, and the file is left as it is.

    Memory holds an entry per row (about 120 bytes), never the file: a 1,000,000-row output reads
    back in order with a peak RSS of about 160 MB (docs/benchmarks.md). A missing file, a folder,
    or a line that is not a result line raises :class:`~llmclient.errors.InvalidRequestError`.
    """
    path = Path(output)
    if path.is_dir():
        raise InvalidRequestError(
            f"{str(path)!r} is a folder; give the results file a run wrote (its --output), or read a Ray "
            f"run's folder of shards with llmclient.scale.shards.read_results"
        )
    if not path.is_file():
        raise InvalidRequestError(f"results file {str(path)!r} does not exist; give the --output of a run")
    return _records(ResultsFile(path))


def _records(results: ResultsFile) -> Iterator[dict[str, Any]]:
    with results.path.open("rb", buffering=_BUFFER) as handle:
        for entry in _winners(results, handle):
            offset = entry >> 1 & ((1 << _OFFSETS) - 1)
            if handle.tell() != offset:
                handle.seek(offset)
            line = handle.readline()
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise InvalidRequestError(
                    f"{results.path} changed while it was read (byte {offset} is no longer a result line); "
                    f"read it again once the run writing it has ended"
                ) from exc
            yield record


def _winners(results: ResultsFile, handle: Any) -> list[int]:
    """Each row key's winning line, as ``(index + 1, offset, ok)`` packed in one int, in input order."""
    winners: dict[Any, int] = {}
    for offset, index, key, ok in results.heads(handle):
        entry = ((0 if index is None else index + 1) << _OFFSETS | offset) << 1 | ok
        held = winners.get(key)
        if held is None or ok or not held & 1:  # an ok line is never replaced by a later error
            winners[key] = entry
    order = sorted(winners.values())
    del winners
    handle.seek(0)
    return order
