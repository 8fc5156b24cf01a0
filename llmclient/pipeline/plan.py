"""Deciding each row's fate before any request: skip it, fail it with a line, count it, or send it."""

from __future__ import annotations

from typing import Any, Protocol

from llmclient.errors import InvalidRequestError
from llmclient.pipeline.keys import MissingIdFieldError, identify, row_key
from llmclient.pipeline.options import RunOptions
from llmclient.pipeline.progress import RunSummary
from llmclient.pipeline.results import Finished
from llmclient.types import Message


class RunState(Protocol):
    """What planning needs of a run: its options, fingerprint and summary, and a way to fail a row."""

    options: RunOptions
    fingerprint: str
    summary: RunSummary

    def record(self, row_id: Any, key: str, row: dict[str, Any]) -> dict[str, Any]:
        """The start of the row's result line."""
        ...

    def write_error(self, base: dict[str, Any], error: Exception) -> None:
        """Write the row's error line."""
        ...


class Plan:
    """What to do with each row: skip it (done, failed before, a duplicate), fail it, or send it.

    Rows sharing an id but not their fields fail with an error line naming both rows; identical
    rows are answered once. A row whose id is missing, or that conflicts, gets a key of its own
    from its fields, so a rerun skips its error line like any failed row instead of adding another.
    """

    def __init__(self, run: RunState, finished: Finished) -> None:
        self._run = run
        self._finished = finished
        self._seen: dict[str, tuple[int, str]] = {}  # key -> (first row index, digest of its fields)

    def row(self, index: int, row: dict[str, Any]) -> tuple[dict[str, Any], list[Message]] | None:
        """The row's result-line start and messages when it is to be sent; ``None`` when it is settled."""
        run, id_field = self._run, self._run.options.id_field
        try:
            row_id, key = identify(index, row, id_field, run.fingerprint)
        except MissingIdFieldError as error:
            self._fail(index, row, row_key({"missing id": id_field, "row": row}, run.fingerprint), error)
            return None
        content = row_key(row, run.fingerprint) if id_field is not None else key
        first = self._seen.get(key)
        if first is not None:
            if first[1] == content:
                run.summary.duplicates += 1
            else:
                conflict = InvalidRequestError(
                    f"row {index} has the id {row_id!r} of row {first[0]} but other fields; ids must be "
                    f"unique: fix the input, or leave out --id-field / id_field= to key rows by content"
                )
                self._fail(row_id, row, row_key({"id conflict": key, "row": row}, run.fingerprint), conflict)
            return None
        self._seen[key] = (index, content)
        if self._skip(key):
            return None
        base = run.record(row_id, key, row)
        try:
            return base, run.options.prompt.render(row)
        except InvalidRequestError as error:  # a field missing or null, a broken value, a lone surrogate
            run.write_error(base, error)
            return None

    def _skip(self, key: str) -> bool:
        retry = self._run.options.retry_failed
        if key in self._finished.done or (key in self._finished.failed and not retry):
            self._run.summary.skipped += 1
            return True
        return False

    def _fail(self, row_id: Any, row: dict[str, Any], key: str, error: Exception) -> None:
        if key in self._seen:
            self._run.summary.duplicates += 1
            return
        self._seen[key] = (-1, key)
        if not self._skip(key):
            self._run.write_error(self._run.record(row_id, key, row), error)
