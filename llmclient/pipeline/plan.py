"""Deciding each row's fate before any request: skip it, fail it with a line, count it, or send it."""

from __future__ import annotations

from typing import Any, Protocol

from llmclient.errors import InvalidRequestError
from llmclient.pipeline.keys import MissingIdFieldError, RowKeys, fields_digest, key_text, row_key
from llmclient.pipeline.options import RunOptions
from llmclient.pipeline.progress import RunSummary
from llmclient.pipeline.results import DONE, FAILED, SEEN, Finished
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

    What the plan remembers of each row it has seen lives in the :class:`Finished` table, next to
    what the results file said of the same key: a ``SEEN`` flag, and with ``id_field`` the first
    row's index and a digest of its fields (all that telling a duplicate from a conflict needs).
    Without ``id_field`` the key is the fields' digest, so the flag is all there is.
    """

    def __init__(self, run: RunState, finished: Finished) -> None:
        self._run = run
        self._keys = finished
        self._ids = RowKeys(run.options.id_field, run.fingerprint)

    def row(self, index: int, row: dict[str, Any]) -> tuple[dict[str, Any], list[Message]] | None:
        """The row's result-line start and messages when it is to be sent; ``None`` when it is settled."""
        run, by_id = self._run, self._ids.id_field is not None
        try:
            row_id, slot = self._ids.of(index, row)
        except MissingIdFieldError as error:
            missing = row_key({"missing id": self._ids.id_field, "row": row}, run.fingerprint)
            self._fail(index, index, row, missing, error)
            return None
        content = fields_digest(row) if by_id else 0
        first = index << _INDEX | content << _CONTENT if by_id else 0
        state = self._keys.see(slot, first)
        if state & SEEN:
            if state >> _CONTENT == content:
                run.summary.duplicates += 1
            else:
                key = key_text(slot)
                conflict = InvalidRequestError(
                    f"row {index} has the id {row_id!r} of row {state >> _INDEX & _INDEXES} but other "
                    f"fields; ids must be unique: fix the input, or leave out --id-field / id_field= to key "
                    f"rows by content"
                )
                clash = row_key({"id conflict": key, "row": row}, run.fingerprint)
                self._fail(index, row_id, row, clash, conflict)
            return None
        if state & (DONE | FAILED) and self._skip(state):
            return None
        base = {"index": index, **run.record(row_id, key_text(slot), row)}
        try:
            return base, run.options.prompt.render(row)
        except InvalidRequestError as error:  # a field missing or null, a broken value, a lone surrogate
            run.write_error(base, error)
            return None

    def _skip(self, state: int) -> bool:
        """Whether the results file settles the row: done, or failed and not to be retried (counted)."""
        summary = self._run.summary
        if state & DONE or (state & FAILED and not self._run.options.retry_failed):
            summary.skipped += 1
            summary.failed_earlier += not state & DONE
            return True
        return False

    def _fail(self, index: int, row_id: Any, row: dict[str, Any], key: str, error: Exception) -> None:
        state = self._keys.see(int(key, 16), 0)
        if state & SEEN:
            self._run.summary.duplicates += 1
            return
        if not self._skip(state):
            self._run.write_error({"index": index, **self._run.record(row_id, key, row)}, error)


_INDEX = 3
"""Where the first row's index starts in a key's state, above the flags."""
_INDEXES = (1 << 40) - 1
_CONTENT = _INDEX + 40
"""Where the digest of the first row's fields starts, above its index."""
